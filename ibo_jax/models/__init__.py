"""Classifiers (NNX, torchvision layouts) and, lazily, the diffusers-compatible UNet.

    model = models.resnet50(num_classes=2, rngs=nnx.Rngs(0))       # also resnet18/34/101, vgg16, inception_v3
    model = models.resnet_small(num_classes=2)                      # demo net: 64x64 -> 8x8 features
    model = models.cnn_small(num_classes=2)                         # its plain-CNN (no skips) counterpart
    model = models.from_torchvision("resnet50", "weights.pth", num_classes=2)
    model = models.vit(models.vit_preset("tiny"), rngs=nnx.Rngs(0))  # ViTs: uni, virchow2, ...
    model = models.from_timm("uni", "pytorch_model.bin", num_classes=2)
    model = models.from_hf_vit("phikon-v2/model.safetensors", num_classes=2)

Every classifier implements `models.base.Classifier`. Importing this package needs neither torch
nor the data stack; `unet2d`, `UNet2DModel` and `from_diffusers_unet` load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ibo_jax.models.base import Classifier, check_images, target_layer
from ibo_jax.models.convert import (
    ARCHS,
    from_torchvision,
    load_state_dict,
    to_torchvision_state_dict,
)
from ibo_jax.models.inception import InceptionV3, inception_v3
from ibo_jax.models.plain import PlainCNN, cnn_small
from ibo_jax.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet_small
from ibo_jax.models.vgg import VGG, vgg16
from ibo_jax.models.vit import DEFAULT_OPS, Ops, TokenContext, VisionTransformer, ViTConfig, vit
from ibo_jax.models.vit_presets import PRESETS as VIT_PRESETS
from ibo_jax.models.vit_presets import vit_preset

_LAZY = {"unet2d": "unet", "UNet2DModel": "unet", "from_diffusers_unet": "unet_convert",
         "from_timm": "vit_import", "from_hf_vit": "vit_import"}

__all__ = [
    "ARCHS", "DEFAULT_OPS", "VIT_PRESETS", "Classifier", "InceptionV3", "Ops", "PlainCNN", "ResNet",
    "TokenContext", "VGG", "ViTConfig", "VisionTransformer", "check_images", "cnn_small",
    "from_torchvision", "inception_v3", "load_state_dict", "resnet18", "resnet34", "resnet50",
    "resnet101", "resnet_small", "target_layer", "to_torchvision_state_dict", "vgg16", "vit",
    "vit_preset", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ibo_jax.models' has no attribute {name!r}")
