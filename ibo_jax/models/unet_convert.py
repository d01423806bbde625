"""Import a diffusers `UNet2DModel` checkpoint into the NNX `UNet2DModel` (one-to-one names).

    model = from_diffusers_unet("dir")                    # config.json + diffusion_pytorch_model.safetensors
    model = from_diffusers_unet((config_dict, state_dict))  # e.g. torch_unet.config, torch_unet.state_dict()

Layout: conv weights OIHW -> HWIO, linear weights [out, in] -> [in, out], GroupNorm weight ->
scale. Old checkpoints with the pre-0.14 attention names (query/key/value/proj_attn) are renamed
as diffusers itself does. Every tensor must be used and every parameter set: anything else is an
error naming the tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.models.unet import UNet2DModel, UNetConfig

_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# diffusers config fields this implementation supports only at these values
_REQUIRED = {
    "time_embedding_type": "positional",
    "resnet_time_scale_shift": "default",
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "mid_block_scale_factor": 1,
    "class_embed_type": None,
    "num_class_embeds": None,
    "mid_block_type": "UNetMidBlock2D",
}


def config_from_diffusers(config: Mapping[str, Any]) -> UNetConfig:
    """diffusers UNet2DModel config (dict or FrozenDict) -> UNetConfig; unsupported settings raise."""
    config = dict(config)
    for name, want in _REQUIRED.items():
        if name in config and config[name] != want:
            raise ValueError(f"from_diffusers_unet: config field {name}={config[name]!r} is not supported "
                             f"(only {want!r})")
    attn_groups = config.get("attn_norm_num_groups")
    if attn_groups is not None and attn_groups != config.get("norm_num_groups", 32):
        raise ValueError(f"from_diffusers_unet: attn_norm_num_groups={attn_groups} differs from norm_num_groups")
    kw = {
        "sample_size": config.get("sample_size"),
        "in_channels": config.get("in_channels", 3),
        "out_channels": config.get("out_channels", 3),
        "block_out_channels": tuple(config.get("block_out_channels", (224, 448, 672, 896))),
        "down_block_types": tuple(config.get("down_block_types", (
            "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"))),
        "up_block_types": tuple(config.get("up_block_types", (
            "AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))),
        "layers_per_block": config.get("layers_per_block", 2),
        "add_attention": config.get("add_attention", True),
        "attention_head_dim": config.get("attention_head_dim", 8),  # diffusers' default, kept
        "norm_num_groups": config.get("norm_num_groups", 32),
        "norm_eps": config.get("norm_eps", 1e-5),
        "flip_sin_to_cos": config.get("flip_sin_to_cos", True),
        "freq_shift": config.get("freq_shift", 0),
        "dropout": config.get("dropout", 0.0),
        "downsample_padding": config.get("downsample_padding", 1),
        "time_embedding_dim": config.get("time_embedding_dim"),
    }
    return UNetConfig(**kw)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def _rename_legacy(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in _LEGACY_ATTN:
        parts[-2:-1] = _LEGACY_ATTN[parts[-2]].split(".")
    return ".".join(parts)


def _target(key: str) -> tuple[tuple, tuple]:
    """'down_blocks.0.resnets.1.conv1.weight' -> candidate NNX paths (kernel, scale) or (bias,)."""
    parts = key.split(".")
    prefix = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
    leaf = parts[-1]
    if leaf == "weight":
        return prefix, ("kernel", "scale")
    if leaf == "bias":
        return prefix, ("bias",)
    return prefix, (leaf,)


def read_config_json(path: Path) -> dict:
    """A diffusers config file (config.json, scheduler_config.json) as a dict; errors name it."""
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e.reason})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object of settings, got {type(value).__name__}")
    return value


def load_diffusers_dir(path: str | os.PathLike) -> tuple[dict, dict]:
    """Reads config.json and diffusion_pytorch_model.safetensors (or .bin) from a directory."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"from_diffusers_unet: {cfg_file} not found (expected a diffusers UNet2DModel dir)")
    config = read_config_json(cfg_file)
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (path / name).is_file():
            from ibo_jax.models.convert import read_weights_file

            return config, read_weights_file(path / name)
    raise FileNotFoundError(f"from_diffusers_unet: no diffusion_pytorch_model.safetensors or .bin in {path}")


def from_diffusers_unet(
    source: str | os.PathLike | tuple[Mapping[str, Any], Mapping[str, Any]],
    *,
    dtype: Any = None,
) -> UNet2DModel:
    """A diffusers UNet2DModel (directory, or (config, state_dict)) as an NNX UNet2DModel in eval mode."""
    if isinstance(source, (str, os.PathLike)):
        cfg_file = Path(source) / "config.json"
        if cfg_file.is_file():  # check the config before reading (possibly large) weights
            config_from_diffusers(read_config_json(cfg_file))
        config, state_dict = load_diffusers_dir(source)
    else:
        config, state_dict = source
    cfg = config_from_diffusers(config)
    abstract = nnx.eval_shape(lambda: UNet2DModel(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, state = nnx.split(abstract)
    variables = {path: var for path, var in nnx.to_flat_state(state)}

    values: dict[tuple, np.ndarray] = {}
    for key, tensor in state_dict.items():
        name = _rename_legacy(key)
        prefix, leaves = _target(name)
        path = next((prefix + (leaf,) for leaf in leaves if prefix + (leaf,) in variables), None)
        if path is None:
            raise ValueError(f"from_diffusers_unet: checkpoint tensor {key!r} has no matching parameter "
                             f"(config {cfg.block_out_channels}, {cfg.down_block_types})")
        arr = _to_numpy(tensor)
        if arr.ndim == 4:
            arr = arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif arr.ndim == 2:
            arr = arr.T  # [out, in] -> [in, out]
        want = tuple(variables[path].get_value().shape)
        if arr.shape != want:
            raise ValueError(f"from_diffusers_unet: tensor {key!r} has shape {tuple(_to_numpy(tensor).shape)} "
                             f"(-> {arr.shape} in Flax layout), parameter {'.'.join(map(str, path))} expects {want}")
        values[path] = arr
    missing = [".".join(map(str, p)) for p in variables if p not in values]
    if missing:
        raise ValueError(f"from_diffusers_unet: checkpoint lacks {len(missing)} parameter(s), first: {missing[:5]}")

    flat = [(p, var.replace(jnp.asarray(values[p], dtype=var.get_value().dtype))) for p, var in variables.items()]
    model = nnx.merge(graphdef, nnx.from_flat_state(flat))
    model.eval()
    return model


def to_diffusers_state_dict(model: UNet2DModel) -> dict[str, np.ndarray]:
    """The inverse mapping: NNX parameters -> diffusers state-dict names and layouts (numpy)."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        arr = np.asarray(var.get_value(), np.float32)
        leaf = path[-1]
        name = ".".join(map(str, path[:-1])) + "." + ("bias" if leaf == "bias" else "weight")
        if arr.ndim == 4:
            arr = arr.transpose(3, 2, 0, 1)
        elif arr.ndim == 2:
            arr = arr.T
        out[name] = np.ascontiguousarray(arr)
    return out
