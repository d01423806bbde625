"""torchvision / timm classifier weights -> the NNX models, one tensor to one tensor.

    model = from_torchvision("resnet50", "resnet50.pth" | "w.safetensors" | "w.npz" | state_dict,
                             num_classes=2)

Names: NNX paths are torchvision's with `kernel`/`scale`/`mean`/`var` for
`weight`/`weight`/`running_mean`/`running_var` (see `torch_name`). Conv kernels are transposed
OIHW -> HWIO and linear kernels [out, in] -> [in, out]. When `num_classes` differs from the
checkpoint's head, the head keeps its fresh initialisation (fine-tuning an ImageNet model).
torch is imported only to read `.pth` files (`torch.load(weights_only=True)`) or torch tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.models.inception import inception_v3
from ibo_jax.models.resnet import resnet18, resnet34, resnet50, resnet101
from ibo_jax.models.vgg import conv_indices, vgg16

ARCHS: dict[str, Callable[..., nnx.Module]] = {
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101,
    "vgg16": vgg16, "inception_v3": inception_v3,
}
HEADS = {"resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "resnet101": "fc",
         "vgg16": "classifier.6", "inception_v3": "fc"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_PREFIXES = ("module.", "model.", "backbone.")
_VGG_FC = (0, 3, 6)


def torch_name(arch: str, path: tuple) -> str:
    """NNX state path -> torchvision/timm tensor name, e.g. ('layer1', 0, 'downsample_bn', 'mean')
    -> 'layer1.0.downsample.1.running_mean'."""
    *mods, leaf = [str(p) for p in path]
    if leaf not in _LEAF:
        raise KeyError(f"no torch name for NNX variable {'.'.join(map(str, path))}")
    if arch.startswith("vgg") and len(mods) == 2:
        if mods[0] == "convs":
            mods = ["features", str(conv_indices()[int(mods[1])])]
        elif mods[0] == "classifier":
            mods = ["classifier", str(_VGG_FC[int(mods[1])])]
    name = ".".join(mods).replace("downsample_conv", "downsample.0").replace("downsample_bn", "downsample.1")
    return f"{name}.{_LEAF[leaf]}"


def _to_numpy(v: Any) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        v = v.numpy()
    return np.asarray(v)


def read_weights_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """The tensors of a .pth/.pt/.bin/.ckpt (torch, `weights_only`), .safetensors or .npz file.
    Every failure names the file: missing, truncated, not that format, or (torch) pickled
    objects beyond tensors, which are refused rather than executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001  safetensors raises its own SafetensorError
            raise ValueError(f"{path}: not a readable .safetensors file ({_first_line(e)})") from e
    if suffix == ".npz":
        from ibo_jax.io import read_npz

        return read_npz(path)
    if suffix not in (".pth", ".pt", ".bin", ".ckpt"):
        raise ValueError(f"{path}: expected .pth/.pt/.bin/.ckpt, .safetensors or .npz")
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading it needs torch (or convert it to .safetensors/.npz)") from e
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused: it holds pickled Python objects, not only tensors (loading it "
                         "could run arbitrary code); save a plain state_dict (torch.save(model.state_dict(), "
                         "...)) or convert it to .safetensors") from e
    except Exception as e:  # noqa: BLE001  truncated zip, not a torch file, ...
        raise ValueError(f"{path}: unreadable or truncated torch checkpoint ({_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_state_dict(weights: str | os.PathLike | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A state dict from a .pth/.pt/.bin (torch), .safetensors or .npz file, or a mapping."""
    if isinstance(weights, Mapping):
        sd = weights
    else:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"weights: no such file {path}")
        sd = read_weights_file(path)
        if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
            sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        out[k] = _to_numpy(v)
    return out


def _to_nnx(value: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if leaf == "kernel" and value.ndim == 2:
        return value.T  # [out, in] -> [in, out]
    return value


def from_torchvision(name: str, weights: str | os.PathLike | Mapping[str, Any], num_classes: int | None = None,
                     *, naming: str = "torchvision", rngs: nnx.Rngs | None = None, **model_kw: Any) -> nnx.Module:
    """Builds `name` and loads torchvision (or timm, `naming='timm'`, ResNets) weights; eval mode.

    num_classes: None keeps the checkpoint's head; a different K gives a freshly initialised head.
    Raises ValueError naming the first missing, mis-shaped or unexpected tensor.
    """
    if name not in ARCHS:
        raise ValueError(f"name: expected one of {sorted(ARCHS)}, got {name!r}")
    if naming not in ("torchvision", "timm"):
        raise ValueError(f"naming: expected 'torchvision' or 'timm', got {naming!r}")
    sd = load_state_dict(weights)
    if naming == "timm" and any(k.startswith("conv1.0.") for k in sd):
        raise ValueError("weights: a timm deep-stem ResNet (e.g. resnet50d: conv1.0/conv1.1/...) is not the "
                         f"torchvision layout of {name}; only the standard stem is supported")
    if name == "inception_v3":
        sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    head = HEADS[name]
    hw = sd.get(f"{head}.weight")
    ckpt_classes = int(hw.shape[0]) if hw is not None and hw.ndim == 2 else None
    if num_classes is None:
        if ckpt_classes is None:
            raise ValueError(f"weights: no '{head}.weight' [K, in] tensor; pass num_classes explicitly")
        num_classes = ckpt_classes
    if name == "vgg16" and "hidden" not in model_kw and "classifier.0.weight" in sd:
        model_kw["hidden"] = int(sd["classifier.0.weight"].shape[0])
    model = ARCHS[name](num_classes, rngs=rngs if rngs is not None else nnx.Rngs(0), **model_kw)
    new_head = ckpt_classes != num_classes
    state = nnx.state(model)
    flat = nnx.to_flat_state(state)
    used = set()
    for path, var in flat:
        leaf = str(path[-1])
        if leaf not in _LEAF:
            continue  # RNG state and the like
        tname = torch_name(name, path)
        if new_head and tname.startswith(head + "."):
            used.add(tname)
            continue
        if tname not in sd:
            raise ValueError(f"weights: missing tensor '{tname}' for {name} (NNX {'.'.join(map(str, path))}); "
                             f"is this a {name} checkpoint?")
        value = _to_nnx(np.asarray(sd[tname], np.float32), leaf)
        if tuple(value.shape) != tuple(var.shape):
            want = _torch_shape(var.shape) if leaf == "kernel" else tuple(var.shape)
            raise ValueError(f"weights: tensor '{tname}' has shape {tuple(sd[tname].shape)}, "
                             f"{name} expects {want}")
        var.set_value(jnp.asarray(value, var.dtype))
        used.add(tname)
    unexpected = [k for k in sd if k not in used and not (new_head and k.startswith(head + "."))]
    if unexpected:
        raise ValueError(f"weights: unexpected tensor '{unexpected[0]}' ({len(unexpected)} in all) for {name}; "
                         "is this checkpoint for another architecture?")
    nnx.update(model, nnx.from_flat_state(flat))
    model.eval()
    return model


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    return (shape[1], shape[0])


def to_torchvision_state_dict(name: str, model: nnx.Module) -> dict[str, np.ndarray]:
    """The inverse map (NNX model -> torchvision-named numpy arrays), e.g. to write a .npz/.safetensors."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        leaf = str(path[-1])
        if leaf not in _LEAF:
            continue
        v = np.asarray(var[...], np.float32)
        if leaf == "kernel" and v.ndim == 4:
            v = np.transpose(v, (3, 2, 0, 1))
        elif leaf == "kernel" and v.ndim == 2:
            v = v.T
        out[torch_name(name, path)] = np.ascontiguousarray(v)
    return out
