"""ViT presets: the pathology foundation models' real architectures and input normalizations.

Each preset is the timm (or Hugging Face) configuration its model card publishes; `num_classes`
is the linear head we put on top (2 by default; foundation checkpoints ship without a head, so
`from_timm`/`from_hf_vit` initialise it fresh). Sources are cited per preset.
"""

from __future__ import annotations

import dataclasses

from ibo_jax.models.vit import ViTConfig

_IMAGENET = dict(input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225))
_HOPTIMUS = dict(input_mean=(0.707223, 0.578729, 0.703617), input_std=(0.211883, 0.230117, 0.177517))
# timm's SwiGLUPacked models give fc1 int(embed_dim * mlp_ratio) outputs (gate | value halves).
_SWIGLU = dict(mlp="swiglu", layer_scale=True)

PRESETS: dict[str, ViTConfig] = {
    # The demo net: 64-px synthetic patches, 8x8 grid of 8-px patches (not a foundation model).
    "tiny": ViTConfig(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_hidden=128,
                      global_pool="token", num_classes=2, **_IMAGENET),
    # UNI (MahmoodLab/UNI): timm vit_large_patch16_224, init_values=1e-5 -> ViT-L/16, LayerScale, GELU.
    "uni": ViTConfig(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096,
                     layer_scale=True, **_IMAGENET),
    # UNI2-h (MahmoodLab/UNI2-h model card timm_kwargs): patch 14, depth 24, 24 heads, width 1536,
    # mlp_ratio 2.66667*2 SwiGLUPacked (fc1 8192), 8 registers, no_embed_class, init_values 1e-5.
    "uni2_h": ViTConfig(img_size=224, patch_size=14, embed_dim=1536, depth=24, num_heads=24, mlp_hidden=8192,
                        reg_tokens=8, no_embed_class=True, **_SWIGLU, **_IMAGENET),
    # Virchow (paige-ai/Virchow): vit_huge_patch14_224 (1280 wide, 32 deep, 16 heads), mlp_ratio
    # 5.3375 SwiGLUPacked (fc1 6832), init_values 1e-5; embedding = [class token | patch mean].
    "virchow": ViTConfig(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_hidden=6832,
                         global_pool="token_avg", **_SWIGLU, **_IMAGENET),
    # Virchow2 (paige-ai/Virchow2 config.json): as Virchow plus reg_tokens=4 with the prefix in the
    # position embedding (no no_embed_class); embedding = [class token | mean of the patch tokens].
    "virchow2": ViTConfig(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_hidden=6832,
                          reg_tokens=4, global_pool="token_avg", **_SWIGLU, **_IMAGENET),
    # H-optimus-0 (bioptimus/H-optimus-0): timm vit_giant_patch14_reg4_dinov2 (1536 wide, 40 deep, 24
    # heads, SwiGLUPacked fc1 8192, 4 registers, no_embed_class), class-token pooling, its own
    # H&E normalization.
    "h_optimus_0": ViTConfig(img_size=224, patch_size=14, embed_dim=1536, depth=40, num_heads=24, mlp_hidden=8192,
                             reg_tokens=4, no_embed_class=True, **_SWIGLU, **_HOPTIMUS),
    # Prov-GigaPath tile encoder (prov-gigapath/prov-gigapath config.json): vit_giant_patch14_dinov2
    # with patch_size=16, mlp_ratio 5.33334 SwiGLUPacked (fc1 8192), init_values 1e-5, no registers.
    "prov_gigapath": ViTConfig(img_size=224, patch_size=16, embed_dim=1536, depth=40, num_heads=24,
                               mlp_hidden=8192, **_SWIGLU, **_IMAGENET),
    # Phikon (owkin/phikon, HF ViTModel): ViT-B/16 224, GELU, no LayerScale; config.json on main has
    # layer_norm_eps 1e-12 (transformers' default; a hub PR proposes timm's 1e-6). from_hf_vit reads
    # the checkpoint's own config.json when it is beside the weights.
    "phikon": ViTConfig(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_hidden=3072,
                        norm_eps=1e-12, **_IMAGENET),
    # Phikon-v2 (owkin/phikon-v2, HF Dinov2Model): ViT-L/16 224, LayerScale, GELU, eps 1e-6.
    "phikon_v2": ViTConfig(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096,
                           layer_scale=True, **_IMAGENET),
}

# Published parameter counts of the trunks (model cards / papers), checked by the tests.
PARAMS_M = {"uni": 303, "uni2_h": 681, "virchow": 631, "virchow2": 631, "h_optimus_0": 1134,
            "prov_gigapath": 1134, "phikon": 86, "phikon_v2": 303}

REFUSED: dict[str, str] = {
    "conch_v1": "CONCH's image embedding comes from open_clip's CoCa attentional pooler (LayerNorm'd "
                "learned queries into nn.MultiheadAttention, then a projection) on a ViT-B/16 448 trunk, "
                "not from timm's AttentionPoolLatent ('map'); without that head's code and checkpoint "
                "(gated) its forward cannot be reproduced and checked offline, so it is left out",
}


def vit_preset(name: str, **overrides) -> ViTConfig:
    """The ViTConfig of preset `name` (see PRESETS), with `overrides` replacing fields."""
    if name in REFUSED:
        raise ValueError(f"preset {name!r}: not supported: {REFUSED[name]}")
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    cfg = PRESETS[name]
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
