"""captum 0.9.0 as the reference for `ibo_jax.attribution.gradients`: a torch twin of
`models.resnet_small` (same weights, normalization inside, input NHWC-in-[0, 1] like ours) and
captum runners returning channels-last numpy arrays.

Used by tests/test_attribution.py and benchmarks/attribution_throughput.py; needs torch and captum.
"""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx
from torch import nn

from ibo_jax.models.convert import to_torchvision_state_dict
from ibo_jax_testing.reference import BasicBlock


class TorchResNetSmall(nn.Module):
    """`models.resnet_small`'s module tree in torch (3x3 stem, no pool, BasicBlocks), taking
    [B, 3, H, W] images in [0, 1] and normalizing inside as the NNX model does."""

    def __init__(self, widths=(16, 32, 64), layers=(1, 1, 1), strides=(2, 2, 2), num_classes=2,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin, self.stages = widths[0], []
        for i, (w, n, s) in enumerate(zip(widths, layers, strides, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, s if j == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.stages.append(f"layer{i + 1}")
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def randomize_batchnorm(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """Random BatchNorm statistics and affine parameters, in place (a fresh model's are 0/1, which
    would make every BatchNorm an identity and hide layout mistakes); returns the model."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        leaf = str(path[-1])
        if not any(str(p).startswith(("bn", "downsample_bn")) for p in path[:-1]):
            continue
        n = var[...].shape
        value = {"scale": 0.5 + 0.5 * rng.random(n), "bias": 0.2 * rng.standard_normal(n),
                 "mean": 0.2 * rng.standard_normal(n), "var": 0.5 + rng.random(n)}.get(leaf)
        if value is not None:
            var[...] = np.asarray(value, np.float32)
    return model


def twin(model: nnx.Module, *, widths, layers=(1, 1, 1), strides=(2, 2, 2), dtype=torch.float64) -> TorchResNetSmall:
    """The torch twin of an NNX `resnet_small(widths=..., layers=..., strides=...)`, eval mode."""
    t = TorchResNetSmall(widths, layers, strides, model.num_classes)
    sd = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in to_torchvision_state_dict("resnet18", model).items()}
    missing, unexpected = t.load_state_dict(sd, strict=False)
    if unexpected or any("num_batches" not in k for k in missing):
        raise ValueError(f"twin: missing {missing}, unexpected {unexpected}")
    return t.to(dtype).eval()


def to_nchw(images: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))).to(dtype)


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def captum_raw(name: str, tmodel: nn.Module, images: np.ndarray, target: int, **kw) -> np.ndarray:
    """captum's attribution [B, H, W, 3] for one of our gradient methods (images NHWC in [0, 1]).

    'smoothgrad' takes `noise` [S, B, H, W, 3] and returns the mean of captum `Saliency` over the
    noisy copies (kw `abs` as Saliency's); captum's NoiseTunnel draws its own noise inside.
    """
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    dtype = next(tmodel.parameters()).dtype
    x = to_nchw(images, dtype)
    if name == "saliency":
        return to_nhwc(Saliency(tmodel).attribute(x, target=target, **kw))
    if name == "input_x_gradient":
        return to_nhwc(InputXGradient(tmodel).attribute(x, target=target, **kw))
    if name == "integrated_gradients":
        if isinstance(kw.get("baselines"), np.ndarray):
            kw["baselines"] = to_nchw(kw["baselines"], dtype)
        return to_nhwc(IntegratedGradients(tmodel).attribute(x, target=target, **kw))
    if name == "smoothgrad":
        noise = kw.pop("noise")
        sal = Saliency(tmodel)
        return np.mean([to_nhwc(sal.attribute(x + to_nchw(eps, dtype), target=target, **kw)) for eps in noise], axis=0)
    raise ValueError(f"name: expected a gradient method, got {name!r}")


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # as timm's fused_attn
        x = x + self.attn.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class TorchViT(nn.Module):
    """A plain-torch ViT with the module names of `models.VisionTransformer` for the options
    class token + 'token' pooling, GELU MLP, no LayerScale/registers (timm's forward; attention
    through torch's SDPA as timm's `fused_attn`); input [B, 3, H, W] in [0, 1]."""

    def __init__(self, c):
        super().__init__()
        if (c.mlp, c.layer_scale, c.reg_tokens, c.global_pool, c.no_embed_class, c.pre_norm) != (
                "gelu", False, 0, "token", False, False) or not c.class_token:
            raise ValueError("TorchViT: only class token, 'token' pooling, GELU, no LayerScale/registers")
        self.register_buffer("mean", torch.tensor(c.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(c.input_std).view(1, 3, 1, 1), persistent=False)
        d, p = c.embed_dim, c.patch_size
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, p, p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (c.img_size // p) ** 2, d))
        self.blocks = nn.ModuleList([_Block(d, c.num_heads, c.hidden, c.norm_eps) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(d, eps=c.norm_eps)
        self.fc = nn.Linear(d, c.num_classes)

    def forward(self, x):
        x = self.patch_embed.proj((x - self.mean) / self.std).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.fc(self.norm(x)[:, 0])


def vit_twin(model: nnx.Module, dtype=torch.float32) -> TorchViT:
    """The `TorchViT` twin of an NNX VisionTransformer (same weights), eval mode."""
    t = TorchViT(model.config)
    sd = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        *mods, leaf = (str(p) for p in path)
        v = np.asarray(var[...], np.float32)
        if leaf == "kernel":
            v = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v.T
        name = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
        sd[".".join([*mods, name])] = torch.from_numpy(np.array(v, copy=True))
    t.load_state_dict(sd, strict=True)
    return t.to(dtype).eval()
