"""timm (and Hugging Face) ViTs as references for the parity tests: tiny random models mirroring
each preset's option set, with the near-identity parts re-randomized.

    config = vit_reference.OPTION_SETS["swiglu_reg_noembed"]      # or any small ViTConfig
    tmodel = vit_reference.timm_vit(config, seed=0)               # torch, eval, explicit softmax
    jmodel = models.from_timm(config, vit_reference.state_dict_numpy(tmodel))
    logits, attns = vit_reference.timm_forward(tmodel, images)    # attns: [B, heads, N, N] per block

timm initialises LayerScale at 1e-5 and the class/register tokens near zero, which makes every
block nearly the identity and a parity test blind; `timm_vit` redraws them (and the LayerNorm
affines and biases). timm imports torchvision, which cannot be installed beside the CPU torch here:
`reference.install_torchvision_stub()` registers a stand-in first. 'token_avg' (Virchow's
embedding) is not a timm pool: `TimmTokenAvg` wraps a pool-less timm ViT with the concatenation and
a `head` Linear, so its state dict has timm's names.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from ibo_jax.models.base import to_float  # noqa: F401  (re-exported for tests)
from ibo_jax.models.vit import ViTConfig
from ibo_jax_testing.reference import install_torchvision_stub, state_dict_numpy  # noqa: F401

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=3)
# One tiny config per option set the presets use.
OPTION_SETS: dict[str, ViTConfig] = {
    # UNI: GELU + LayerScale, class-token pooling
    "gelu_ls": ViTConfig(**TINY, layer_scale=True, mlp_hidden=64),
    # UNI2-h, H-optimus-0: SwiGLU + registers + position embeddings for the patches only
    "swiglu_reg_noembed": ViTConfig(**TINY, mlp="swiglu", mlp_hidden=128, layer_scale=True, reg_tokens=2,
                                    no_embed_class=True),
    # Virchow2: SwiGLU + registers with embedded prefix, class token + patch mean
    "swiglu_reg_token_avg": ViTConfig(**TINY, mlp="swiglu", mlp_hidden=128, layer_scale=True, reg_tokens=2,
                                      global_pool="token_avg"),
    # Phikon (ViTModel): no LayerScale, eps 1e-12
    "plain": ViTConfig(**TINY, norm_eps=1e-12, mlp_hidden=64),
    # mean pooling with fc_norm (timm's default for 'avg'); no class token, one register
    "avg": ViTConfig(**TINY, global_pool="avg", class_token=False, reg_tokens=1, mlp_hidden=64),
    # timm's attention-pool head (SigLIP-style: no class token)
    "map": ViTConfig(**TINY, global_pool="map", class_token=False, reg_tokens=1, mlp_hidden=64),
}


def import_timm():
    install_torchvision_stub()
    import timm

    return timm


class TimmTokenAvg(nn.Module):
    """A pool-less timm ViT + [class token | mean of patch tokens] + Linear `head`."""

    def __init__(self, trunk: nn.Module, num_classes: int):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(2 * trunk.embed_dim, num_classes)

    def forward_embed(self, x):
        t = self.trunk.forward_features(x)
        return torch.cat([t[:, 0], t[:, self.trunk.num_prefix_tokens:].mean(1)], dim=-1)

    def forward(self, x):
        return self.head(self.forward_embed(x))

    def state_dict_timm(self) -> dict[str, np.ndarray]:
        sd = {f"{k}": v for k, v in state_dict_numpy(self.trunk).items()}
        sd.update({f"head.{k}": v for k, v in state_dict_numpy(self.head).items()})
        return sd


def timm_kwargs(c: ViTConfig) -> dict:
    """timm.models.vision_transformer.VisionTransformer kwargs for a ViTConfig."""
    timm = import_timm()
    kw = dict(img_size=c.img_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depth=c.depth,
              num_heads=c.num_heads, mlp_ratio=(c.hidden + 0.5) / c.embed_dim, qkv_bias=c.qkv_bias,
              class_token=c.class_token, reg_tokens=c.reg_tokens, no_embed_class=c.no_embed_class,
              pre_norm=c.pre_norm, fc_norm=c.fc_norm, num_classes=c.num_classes,
              global_pool="" if c.global_pool == "token_avg" else c.global_pool,
              norm_layer=functools.partial(nn.LayerNorm, eps=c.norm_eps))
    if c.layer_scale:
        kw["init_values"] = c.layer_scale_init
    if c.mlp == "swiglu":
        kw.update(mlp_layer=timm.layers.SwiGLUPacked, act_layer=nn.SiLU)
    return kw


def timm_vit(config: ViTConfig, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A random timm ViT for `config` (eval, non-fused attention), near-identity parts redrawn."""
    timm = import_timm()
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    kw = timm_kwargs(config)
    if config.global_pool == "token_avg":
        model = TimmTokenAvg(VisionTransformer(**{**kw, "num_classes": 0}), config.num_classes)
    else:
        model = VisionTransformer(**kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma" or name.endswith(("cls_token", "reg_token", "latent")):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif leaf == "bias" or (leaf == "weight" and p.ndim == 1):  # biases, LayerNorm affines
                p.copy_((1.0 if leaf == "weight" else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.ndim >= 2:  # O(1) activations and gradients through every block
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    del timm
    return model.to(dtype).eval()


def state_dict_timm(model: nn.Module) -> dict[str, np.ndarray]:
    """timm-named numpy tensors of a `timm_vit` model."""
    return model.state_dict_timm() if isinstance(model, TimmTokenAvg) else state_dict_numpy(model)


def to_torch(images: np.ndarray, config: ViTConfig, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1] -> normalized NCHW (the config's input_mean/input_std)."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    xn = (np.asarray(images, np_dtype) - np.asarray(config.input_mean, np_dtype)) / np.asarray(config.input_std, np_dtype)
    return torch.from_numpy(np.ascontiguousarray(xn.transpose(0, 3, 1, 2))).to(dtype)


def timm_forward(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, attention probabilities per block) for a normalized NCHW batch: the probabilities
    are the output of each block's `attn.attn_drop` (identity in eval, fed the softmax)."""
    trunk = model.trunk if isinstance(model, TimmTokenAvg) else model
    attns: list[torch.Tensor] = []
    hooks = [blk.attn.attn_drop.register_forward_hook(lambda _m, _i, out: attns.append(out))
             for blk in trunk.blocks]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, attns


def timm_forward_kept(model: nn.Module, x: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
    """Logits [1, K] of one normalized image with the dropped patch tokens sliced out of timm's
    sequence after the position embedding (what `VisionTransformer(keep=...)` must equal)."""
    trunk = model.trunk if isinstance(model, TimmTokenAvg) else model
    p = trunk.num_prefix_tokens
    t = trunk._pos_embed(trunk.patch_embed(x))
    idx = list(range(p)) + [p + int(i) for i in np.flatnonzero(keep)]
    t = trunk.norm(trunk.blocks(trunk.norm_pre(t[:, idx])))
    if isinstance(model, TimmTokenAvg):
        return model.head(torch.cat([t[:, 0], t[:, p:].mean(1)], dim=-1))
    return trunk.forward_head(t)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraws a Hugging Face model's 1-D parameters (LayerNorm affines, biases, LayerScale) and
    its class token / position embeddings, which start at constants or near zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith(("cls_token", "position_embeddings")):
                base = 1.0 if name.endswith(("weight", "lambda1")) and p.ndim == 1 else 0.0
                p.copy_(base + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    return model.eval()


# ---- Hugging Face transformers (installed --no-deps; it also needs `tokenizers` installed) -------
HF_4X_NAMES = (  # transformers 5.x -> 4.x layer names (published checkpoints use 4.x's)
    ("layers.", "encoder.layer."), ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
)


def hf_state_dict_4x(sd: dict[str, np.ndarray], *, vit_model: bool) -> dict[str, np.ndarray]:
    """A transformers 5.x ViTModel/Dinov2Model state dict under the 4.x names: the inverse of
    transformers' own `conversion_mapping` renames (ViTModel's MLP: intermediate.dense/output.dense;
    Dinov2's SwiGLU: packed mlp.weights_in = [gate_proj; up_proj], mlp.weights_out)."""
    out: dict[str, np.ndarray] = {}
    for key, v in sd.items():
        k = key
        for new, old in HF_4X_NAMES:
            if new == "layers." and not k.startswith("layers."):
                continue
            k = k.replace(new, old)
        if vit_model:
            k = k.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
        if ".mlp.up_proj." in k:
            continue
        if ".mlp.gate_proj." in k:
            up = sd[key.replace("gate_proj", "up_proj")]
            k, v = k.replace("gate_proj", "weights_in"), np.concatenate([v, up], axis=0)
        k = k.replace("mlp.down_proj", "mlp.weights_out")
        out[k] = v
    return out


def import_transformers():
    """transformers (its import checks that `tokenizers` is installed, though the vision models
    never use it; torchvision gets the stand-in)."""
    install_torchvision_stub()
    import transformers

    return transformers
