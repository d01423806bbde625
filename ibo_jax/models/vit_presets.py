"""ViT presets: the pathology foundation models' real architectures and input normalizations.

Each preset is the timm (or Hugging Face) configuration its model card publishes; `num_classes`
is the linear head we put on top (2 by default; foundation checkpoints ship without a head, so
`from_timm`/`from_hf_vit` initialise it fresh). Sources are cited per preset.
"""

from __future__ import annotations

import dataclasses

from ibo_jax.models.vit import ViTConfig

_IMAGENET = dict(input_mean=(0.485, 0.456, 0.406), input_std=(0.229, 0.224, 0.225))

PRESETS: dict[str, ViTConfig] = {
    # The demo net: 64-px synthetic patches, 8x8 grid of 8-px patches.
    "tiny": ViTConfig(img_size=64, patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_hidden=128,
                      global_pool="token", num_classes=2, **_IMAGENET),
}

REFUSED: dict[str, str] = {}


def vit_preset(name: str, **overrides) -> ViTConfig:
    """The ViTConfig of preset `name` (see PRESETS), with `overrides` replacing fields."""
    if name in REFUSED:
        raise ValueError(f"preset {name!r}: not supported: {REFUSED[name]}")
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    cfg = PRESETS[name]
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
