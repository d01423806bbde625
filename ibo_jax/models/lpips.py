"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, in Flax NNX.

The study's realism number: distance between an original patch and its occluded version, lower =
more realistic occlusion. As in the original: scale inputs to [-1, 1], shift/scale per channel,
AlexNet features after relu1..relu5, unit-normalize each feature vector over channels, squared
difference, one learned 1x1 linear head per layer, spatial mean, sum over layers.

Weights: no weights ship with ibo_jax. The AlexNet backbone: pass a torchvision AlexNet state
dict file (`.pth` read with torch `weights_only=True`, or `.npz` / `.safetensors` with the same
keys `features.{0,3,6,8,10}.{weight,bias}`). The five linear heads (LPIPS v0.1, AlexNet, BSD):
by default the `weights/v0.1/alex.pth` of the installed `lpips` package (the `interop` extra; pip
install --no-deps lpips==0.1.4, it is found without importing it, so torchvision is not needed),
or any file with the keys `lin{0..4}.model.1.weight` (.pth) or `lin{0..4}` (.npz,
`convert_lpips_heads`). `load_lpips(None)` returns None: LPIPS is then reported as unavailable,
never computed with random backbone weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.parallel import map_batches

HEADS_IN_PACKAGE = ("lpips", "weights/v0.1/alex.pth")  # the lpips wheel's AlexNet heads
CHANNELS = (64, 192, 384, 256, 256)
# (torchvision features index, in, out, kernel, stride, padding, max-pool before this conv)
_CONVS = ((0, 3, 64, 11, 4, 2, False), (3, 64, 192, 5, 1, 2, True), (6, 192, 384, 3, 1, 1, True),
          (8, 384, 256, 3, 1, 1, False), (10, 256, 256, 3, 1, 1, False))
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class AlexNetFeatures(nnx.Module):
    """torchvision AlexNet `features` up to relu5 (the last max-pool is not used by LPIPS)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.convs = nnx.List(
            [
                nnx.Conv(cin, cout, (k, k), strides=(s, s), padding=((p, p), (p, p)), rngs=rngs)
                for _, cin, cout, k, s, p, _ in _CONVS
            ]
        )

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        """x: [B, H, W, 3] already LPIPS-scaled -> [relu1..relu5], each [B, h_l, w_l, C_l]."""
        outs = []
        for conv, (*_, pool) in zip(self.convs, _CONVS, strict=True):
            if pool:  # torch MaxPool2d(3, 2): no padding, floor mode
                x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
            x = nnx.relu(conv(x))
            outs.append(x)
        return outs


class LPIPS(nnx.Module):
    """LPIPS distance; `__call__(a, b)` with images [B, H, W, 3] in [0, 1] -> [B] float32."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.net = AlexNetFeatures(rngs=rngs)
        self.heads = nnx.List([nnx.Param(jnp.zeros((c,), jnp.float32)) for c in CHANNELS])

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        fa, fb = self.net(_scale(a)), self.net(_scale(b))
        total = 0.0
        for xa, xb, w in zip(fa, fb, self.heads, strict=True):
            d = (_unit(xa) - _unit(xb)) ** 2  # [B, h, w, C]
            total = total + jnp.mean(d @ w[...], axis=(1, 2))  # [B]
        return total


def _scale(x: jax.Array) -> jax.Array:
    return (2.0 * x - 1.0 - _SHIFT) / _SCALE


def _unit(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A state dict file as numpy arrays: .pth/.pt (torch, weights_only), .npz, .safetensors."""
    from ibo_jax.models.convert import read_weights_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file (expected a torchvision AlexNet state dict)")
    sd = read_weights_file(path)
    if isinstance(sd, Mapping) and "state_dict" in sd:
        sd = sd["state_dict"]
    return {k: (v.detach().float().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in sd.items()
            if hasattr(v, "detach") or isinstance(v, np.ndarray)}


def default_heads_path() -> Path | None:
    """The installed lpips package's AlexNet v0.1 heads (found without importing lpips), or None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(HEADS_IN_PACKAGE[0])
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / HEADS_IN_PACKAGE[1]
        if path.is_file():
            return path
    return None


def read_heads(heads: str | os.PathLike | Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The five linear heads {'lin0'..'lin4': [C]} from a mapping, a .pth/.pt/.safetensors state
    dict (`lin{i}.model.1.weight`), an .npz (`lin{i}`), or, with None, the lpips package's."""
    if heads is None or (isinstance(heads, str) and heads == ""):
        heads = default_heads_path()
        if heads is None:
            raise FileNotFoundError(
                "LPIPS heads: none given and the lpips package is not installed (pip install --no-deps "
                "lpips==0.1.4, or pass its weights/v0.1/alex.pth as score.lpips_heads)")
    if isinstance(heads, Mapping):
        sd, where = dict(heads), "LPIPS heads"
    else:
        path = Path(heads)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such LPIPS heads file (expected lpips' weights/v0.1/alex.pth)")
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                sd = {k: z[k] for k in z.files}
        else:
            sd = read_state_dict(path)
        where = str(path)
    out = {}
    for i in range(len(CHANNELS)):
        for k in (f"lin{i}", f"lin{i}.model.1.weight"):
            if k in sd:
                out[f"lin{i}"] = np.asarray(sd[k], np.float32).reshape(-1)
                break
        else:
            raise KeyError(f"{where}: no weights for head lin{i} (expected 'lin{i}.model.1.weight' or 'lin{i}'; "
                           f"keys found: {sorted(sd)[:6]}...)")
    return out


def convert_lpips_heads(pth_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """The lpips wheel's `weights/v0.1/alex.pth` -> a heads .npz (no torch needed to read it)."""
    from ibo_jax.io import write_npz

    write_npz(out_path, read_heads(pth_path))


def _strip_prefix(sd: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accepts keys 'features.0.weight', 'module.features.0.weight', 'net.slice1.0.weight' ..."""
    out = {}
    for k, v in sd.items():
        if "features." in k:
            out[k[k.index("features."):]] = v
        elif ".slice" in k or k.startswith("slice"):  # lpips' own `net.sliceN.<idx>.<param>`
            parts = k.split(".")
            i = next(j for j, p in enumerate(parts) if p.startswith("slice"))
            out[f"features.{parts[i + 1]}.{parts[i + 2]}"] = v
    return out


def load_lpips(
    alexnet_weights: str | os.PathLike | Mapping[str, np.ndarray] | None,
    heads: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
) -> LPIPS | None:
    """LPIPS with imported AlexNet weights, or None when no backbone weights are given."""
    if alexnet_weights is None or alexnet_weights == "":
        return None
    sd = alexnet_weights if isinstance(alexnet_weights, Mapping) else read_state_dict(alexnet_weights)
    sd = _strip_prefix(sd)
    hd = read_heads(heads)
    model = LPIPS(rngs=nnx.Rngs(0))
    for conv, (idx, cin, cout, k, *_rest) in zip(model.net.convs, _CONVS, strict=True):
        w_key, b_key = f"features.{idx}.weight", f"features.{idx}.bias"
        if w_key not in sd or b_key not in sd:
            raise KeyError(
                f"AlexNet weights: missing {w_key!r}/{b_key!r}; expected a torchvision alexnet state dict "
                f"(keys found: {sorted(sd)[:6]}...)"
            )
        w = np.asarray(sd[w_key], np.float32)
        if w.shape != (cout, cin, k, k):
            raise ValueError(f"AlexNet weights: {w_key} has shape {w.shape}, expected {(cout, cin, k, k)}")
        conv.kernel[...] = jnp.asarray(w.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        conv.bias[...] = jnp.asarray(np.asarray(sd[b_key], np.float32))
    for i, (p, c) in enumerate(zip(model.heads, CHANNELS, strict=True)):
        h = np.asarray(hd[f"lin{i}"], np.float32).reshape(-1)
        if h.shape != (c,):
            raise ValueError(f"LPIPS heads: lin{i} has {h.shape[0]} weights, expected {c}")
        p[...] = jnp.asarray(h)
    return model


def make_lpips_fn(model: LPIPS, *, batch_size: int = 32):
    """A batched numpy-facing LPIPS: fn(a, b) with [N, H, W, 3] in [0, 1] -> [N] float32.

    The module is split once; the jitted pure function merges it inside (no closure over state).
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def dist(state, a, b):  # [B, H, W, 3] x2 -> [B]
        return nnx.merge(graphdef, state)(a, b)

    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32)
        b = np.asarray(b, np.float32)
        if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
            raise ValueError(f"LPIPS inputs: expected two equal [N, H, W, 3] arrays, got {a.shape}, {b.shape}")
        if a.shape[1] < 32 or a.shape[2] < 32:
            raise ValueError(f"LPIPS inputs: AlexNet needs images of at least 32x32, got {a.shape[1:3]}")
        out = map_batches(lambda xa, xb: dist(state, xa, xb), a, b, batch_size=batch_size)
        return np.zeros((0,), np.float32) if out is None else out

    return fn


def load_lpips_vgg(*, batch_size: int = 16):
    """lpips-j's VGG16 LPIPS as fn(a, b) ([N, H, W, 3] in [0, 1] -> [N]), or None when lpips-j
    is not installed or its Hugging Face hub weights cannot be fetched (offline)."""
    try:
        from lpips_j.lpips import LPIPS as LPIPSVGG

        net = LPIPSVGG()
        probe = jnp.zeros((1, 32, 32, 3), jnp.float32)
        params = net.init(jax.random.key(0), probe, probe)  # downloads the weights
    except Exception:  # ImportError, network / hub errors: "unavailable", never random weights
        return None
    apply = jax.jit(lambda p, a, b: net.apply(p, 2 * a - 1, 2 * b - 1).reshape(-1))

    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float32)
        b = np.asarray(b, np.float32)
        out = [np.asarray(apply(params, a[s : s + batch_size], b[s : s + batch_size]))  # unpadded, as lpips-j
               for s in range(0, len(a), batch_size)]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    return fn
