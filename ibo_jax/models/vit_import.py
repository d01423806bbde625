"""timm and Hugging Face ViT checkpoints -> `VisionTransformer`, one tensor to one tensor.

    model = from_timm("uni", "pytorch_model.bin", num_classes=2)        # .bin/.pth/.safetensors/.npz
    model = from_hf_vit("phikon-v2/model.safetensors", num_classes=2)   # ViTModel / Dinov2Model

timm names map onto the NNX tree directly (`blocks.3.attn.qkv.weight` <-> blocks[3].attn.qkv.kernel,
transposed; `head` <-> `fc`; LayerNorm `weight` <-> `scale`). Hugging Face's separate
query/key/value projections are concatenated into timm's packed `qkv`. Position embeddings stored
for another grid are resampled once here, exactly as timm's `resample_abs_pos_embed` does with its
defaults (bicubic, `antialias=True`: torch's antialiased bicubic is PIL's filter, a = -0.5, with the
support widened when shrinking; `antialias=False` gives the classic a = -0.75 kernel). A checkpoint
without a head (foundation models ship none) or with another class count gets a fresh head. Any
mismatch is one line naming the file and the first offending tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.models.convert import load_state_dict
from ibo_jax.models.vit import VisionTransformer, ViTConfig, vit
from ibo_jax.models.vit_presets import vit_preset

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


# ---- position-embedding resampling (torch F.interpolate 'bicubic', align_corners=False) ---------
def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def resize_matrix(n_in: int, n_out: int, *, antialias: bool = True) -> np.ndarray:
    """[n_out, n_in] float64 weights of torch's 1-D bicubic resize (align_corners=False)."""
    w = np.zeros((n_out, n_in))
    scale = n_in / n_out
    if antialias:  # torch's _upsample_bicubic2d_aa: PIL's filter (a = -0.5), support scaled when shrinking
        support = 2.0 * max(scale, 1.0)
        inv = 1.0 / scale if scale >= 1.0 else 1.0
        for i in range(n_out):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), n_in)
            js = np.arange(lo, hi)
            k = _cubic((js - center + 0.5) * inv, -0.5)
            w[i, js] = k / k.sum()
        return w
    for i in range(n_out):  # upsample_bicubic2d: a = -0.75, border taps clamped
        src = scale * (i + 0.5) - 0.5
        f = math.floor(src)
        t = src - f
        for off, k in zip(range(-1, 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), -0.75), strict=True):
            w[i, min(max(f + off, 0), n_in - 1)] += k
    return w


def resample_pos_embed(pos: np.ndarray, new_grid: tuple[int, int], num_prefix_tokens: int,
                       old_grid: tuple[int, int] | None = None, *, antialias: bool = True) -> np.ndarray:
    """[1, P + h*w, D] -> [1, P + H*W, D] (timm's `resample_abs_pos_embed`); prefix rows kept."""
    pos = np.asarray(pos)
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(f"pos_embed: {grid.shape[1]} patch positions are not a square grid")
        old_grid = (side, side)
    d = grid.shape[-1]
    g = grid.reshape(old_grid[0], old_grid[1], d).astype(np.float64)
    g = np.einsum("Hh,Ww,hwd->HWd", resize_matrix(old_grid[0], new_grid[0], antialias=antialias),
                  resize_matrix(old_grid[1], new_grid[1], antialias=antialias), g)
    out = g.reshape(1, new_grid[0] * new_grid[1], d).astype(pos.dtype)
    return np.concatenate([prefix, out], axis=1)


# ---- loading ------------------------------------------------------------------------------------
def _source(weights) -> str:
    return "state_dict" if isinstance(weights, Mapping) else str(weights)


def timm_name(path: tuple) -> str:
    """NNX path -> timm tensor name, e.g. ('blocks', 3, 'attn', 'qkv', 'kernel') ->
    'blocks.3.attn.qkv.weight', ('fc', 'bias') -> 'head.bias', ('cls_token',) -> 'cls_token'."""
    parts = [str(p) for p in path]
    if parts[0] == "fc":
        parts[0] = "head"
    if len(parts) > 1 and parts[-1] in _LEAF:
        parts[-1] = _LEAF[parts[-1]]
    return ".".join(parts)


def expected_shapes(config: ViTConfig) -> dict[str, tuple[int, ...]]:
    """timm tensor name -> torch shape of every parameter a checkpoint for `config` holds (no
    allocation: the model is built with nnx.eval_shape)."""
    model = nnx.eval_shape(lambda: vit(config, rngs=nnx.Rngs(0)))
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape, leaf = tuple(var.shape), str(path[-1])
        if leaf == "kernel":
            shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else (shape[1], shape[0])
        out[timm_name(path)] = shape
    return out


def _to_nnx(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def load_timm_layout(config: ViTConfig, sd: Mapping[str, np.ndarray], *, source: str,
                     num_classes: int | None = None, rngs: nnx.Rngs | None = None) -> VisionTransformer:
    """A VisionTransformer for `config` with the timm-named tensors `sd` (see module docstring)."""
    head = sd.get("head.weight")
    ckpt_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else None
    k = num_classes if num_classes is not None else (ckpt_classes or config.num_classes)
    config = dataclasses.replace(config, num_classes=int(k))
    model = vit(config, rngs=rngs)
    fresh_head = ckpt_classes != config.num_classes
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    used: set[str] = set()
    for path, var in flat:
        leaf, name = str(path[-1]), timm_name(path)
        if fresh_head and name.startswith("head."):
            continue
        if name not in sd:
            raise ValueError(f"{source}: missing tensor '{name}' for this ViTConfig (NNX "
                             f"{'.'.join(map(str, path))}); is the checkpoint for this preset/config?")
        value = np.asarray(sd[name])
        if name == "pos_embed" and value.shape != tuple(var.shape):
            value = _resample_checked(value, config, source)
        value = _to_nnx(value, leaf)
        if tuple(value.shape) != tuple(var.shape):
            want = tuple(var.shape)
            if leaf == "kernel":
                want = (want[3], want[2], want[0], want[1]) if len(want) == 4 else (want[1], want[0])
            raise ValueError(f"{source}: tensor '{name}' has shape {tuple(np.shape(sd[name]))}, this ViTConfig "
                             f"expects {want}")
        var.set_value(jnp.asarray(value, var.dtype))
        used.add(name)
    extra = [n for n in sd if n not in used and not (fresh_head and n.startswith("head."))]
    if extra:
        raise ValueError(f"{source}: unexpected tensor '{extra[0]}' ({len(extra)} in all) for this ViTConfig; "
                         "does the checkpoint have another option set (registers, pooling, LayerScale)?")
    nnx.update(model, nnx.from_flat_state(flat))
    model.eval()
    return model


def _resample_checked(value: np.ndarray, config: ViTConfig, source: str) -> np.ndarray:
    n_prefix = 0 if config.no_embed_class else config.num_prefix_tokens
    if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != config.embed_dim:
        raise ValueError(f"{source}: tensor 'pos_embed' has shape {value.shape}, expected [1, L, {config.embed_dim}]")
    n = value.shape[1] - n_prefix
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise ValueError(f"{source}: tensor 'pos_embed' has {value.shape[1]} positions: not {n_prefix} prefix "
                         "positions plus a square grid; check reg_tokens/no_embed_class")
    return resample_pos_embed(value, config.grid_size, n_prefix, (side, side))


def from_timm(preset_or_config: str | ViTConfig, weights: str | os.PathLike | Mapping[str, Any],
              num_classes: int | None = None, *, rngs: nnx.Rngs | None = None) -> VisionTransformer:
    """A timm VisionTransformer checkpoint (e.g. UNI's `pytorch_model.bin`) as a VisionTransformer.

    num_classes: None keeps the checkpoint's head (or the config's class count with a fresh head
    when it has none); another K gives a fresh head. An open_clip CONCH checkpoint is refused."""
    config = vit_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    if not isinstance(config, ViTConfig):
        raise TypeError(f"preset_or_config: expected a preset name or ViTConfig, got {type(config).__name__}")
    source = _source(weights)
    sd = load_state_dict(weights)
    return load_timm_layout(config, sd, source=source, num_classes=num_classes, rngs=rngs)


# ---- Hugging Face ViTModel / Dinov2Model --------------------------------------------------------
_HF_PREFIXES = ("vit.", "dinov2.")
_HF_BLOCK = {  # inner name of layer i (transformers 4.x and 5.x) -> timm's inside blocks.{i}
    "layernorm_before": "norm1", "layernorm_after": "norm2", "norm1": "norm1", "norm2": "norm2",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.fc1", "mlp.weights_out": "mlp.fc2", "mlp.down_proj": "mlp.fc2",
    "layer_scale1": "ls1", "layer_scale2": "ls2",
}
_HF_PACKED = {  # parts concatenated along the output axis, in this order
    "attn.qkv": (("attention.attention.query", "attention.q_proj"), ("attention.attention.key", "attention.k_proj"),
                 ("attention.attention.value", "attention.v_proj")),
    "mlp.fc1": (("mlp.gate_proj",), ("mlp.up_proj",)),
}
_HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
           "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
           "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
           "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
           "classifier.weight": "head.weight", "classifier.bias": "head.bias"}
_HF_DROPPED = ("embeddings.mask_token", "pooler.dense.weight", "pooler.dense.bias")
_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def hf_to_timm(sd: Mapping[str, np.ndarray], *, source: str = "state_dict") -> dict[str, np.ndarray]:
    """Renames a ViTModel / Dinov2Model (or *ForImageClassification) state dict, with transformers
    4.x names (`encoder.layer.i.attention.attention.query`) or 5.x names (`layers.i.attention.q_proj`,
    Dinov2's `mlp.gate_proj`/`up_proj`), to timm's names."""
    out: dict[str, np.ndarray] = {}
    parts: dict[tuple[str, str, str], np.ndarray] = {}  # (layer, inner, kind) -> tensor
    for key, v in sd.items():
        for p in _HF_PREFIXES:
            key = key[len(p):] if key.startswith(p) else key
        if key in _HF_DROPPED:
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = v
            continue
        m = _LAYER.match(key)
        if m is None:
            raise ValueError(f"{source}: unexpected tensor '{key}': not a ViTModel/Dinov2Model layout")
        i, inner, kind = m.groups()
        if kind == "lambda1" and inner in _HF_BLOCK:
            out[f"blocks.{i}.{_HF_BLOCK[inner]}.gamma"] = v
        elif inner in _HF_BLOCK and kind != "lambda1":
            out[f"blocks.{i}.{_HF_BLOCK[inner]}.{kind}"] = v
        elif any(inner in names for group in _HF_PACKED.values() for names in group):
            parts[(i, inner, kind)] = v
        else:
            raise ValueError(f"{source}: unexpected tensor '{key}': not a ViTModel/Dinov2Model layout")
    layers = sorted({(i, kind) for i, _, kind in parts})
    for i, kind in layers:
        for target, group in _HF_PACKED.items():
            found = [next((parts[(i, n, kind)] for n in names if (i, n, kind) in parts), None) for names in group]
            if all(f is None for f in found):
                continue
            if any(f is None for f in found):
                missing = group[[f is None for f in found].index(True)][0]
                raise ValueError(f"{source}: layer {i} lacks '{missing}.{kind}' beside its other {target} parts")
            out[f"blocks.{i}.{target}.{kind}"] = np.concatenate(found, axis=0)
    return out


def _hf_json(weights) -> dict:
    if isinstance(weights, Mapping):
        return {}
    p = Path(weights)
    cfg = (p if p.is_dir() else p.parent) / "config.json"
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def _hf_weights_file(weights):
    if isinstance(weights, Mapping) or not Path(weights).is_dir():
        return weights
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(weights) / name).is_file():
            return Path(weights) / name
    raise FileNotFoundError(f"{weights}: no model.safetensors or pytorch_model.bin in this directory")


def from_hf_vit(weights: str | os.PathLike | Mapping[str, Any], num_classes: int | None = None, *,
                config: ViTConfig | None = None, rngs: nnx.Rngs | None = None) -> VisionTransformer:
    """A Hugging Face ViTModel (Phikon) or Dinov2Model (Phikon-v2) checkpoint as a VisionTransformer.

    weights: the model directory (its config.json gives heads and LayerNorm eps), a weights file, or a
    state dict. Without a config the architecture is read off the tensor shapes, with 64-wide heads
    (true of ViT-S/B/L/H/g) and eps 1e-12 (ViTModel) / 1e-6 (Dinov2Model); pass `config=` to override.
    Both 4.x names and the `vit.`/`dinov2.` prefixes of *ForImageClassification are accepted."""
    source = _source(weights)
    hf = _hf_json(weights)
    sd = hf_to_timm(load_state_dict(_hf_weights_file(weights)), source=source)
    if config is None:
        config = _infer_hf_config(sd, hf, source)
    return load_timm_layout(config, sd, source=source, num_classes=num_classes, rngs=rngs)


def _infer_hf_config(sd: Mapping[str, np.ndarray], hf: dict, source: str) -> ViTConfig:
    for need in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if need not in sd:
            raise ValueError(f"{source}: missing tensor for '{need}': not a ViTModel/Dinov2Model checkpoint")
    d, patch = int(sd["cls_token"].shape[-1]), int(sd["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    dinov2 = "blocks.0.ls1.gamma" in sd
    swiglu = bool(hf.get("use_swiglu_ffn", False)) or sd["blocks.0.mlp.fc2.weight"].shape[1] * 2 == \
        sd["blocks.0.mlp.fc1.weight"].shape[0]
    n = int(sd["pos_embed"].shape[1]) - 1
    side = math.isqrt(n)
    heads = hf.get("num_attention_heads")
    if heads is None and d % 64:
        raise ValueError(f"{source}: width {d} is not a multiple of 64 and there is no config.json with "
                         "num_attention_heads; pass config=ViTConfig(...)")
    return ViTConfig(img_size=side * patch, patch_size=patch, embed_dim=d, depth=depth,
                     num_heads=int(heads if heads is not None else d // 64),
                     mlp_hidden=int(sd["blocks.0.mlp.fc1.weight"].shape[0]), mlp="swiglu" if swiglu else "gelu",
                     layer_scale=dinov2, qkv_bias=bool(hf.get("qkv_bias", True)),
                     norm_eps=float(hf.get("layer_norm_eps", 1e-6 if dinov2 else 1e-12)))
