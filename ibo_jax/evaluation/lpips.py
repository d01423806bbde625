"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, in Flax NNX.

The study's realism number: distance between an original patch and its occluded version, lower =
more realistic occlusion. As in the original: scale inputs to [-1, 1], shift/scale per channel,
AlexNet features after relu1..relu5, unit-normalize each feature vector over channels, squared
difference, one learned 1x1 linear head per layer, spatial mean, sum over layers.

Weights: the five linear heads (LPIPS v0.1, AlexNet) ship with the package
(`data/lpips_alex_v0.1_heads.npz`, BSD licence beside it). The AlexNet backbone weights are NOT
shipped: pass a torchvision AlexNet state dict file (`.pth` read with torch `weights_only=True`,
or `.npz` / `.safetensors` with the same keys `features.{0,3,6,8,10}.{weight,bias}`).
`load_lpips(None)` returns None: LPIPS is then reported as unavailable, never computed with random
backbone weights.
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

HEADS_FILE = Path(__file__).resolve().parent / "data" / "lpips_alex_v0.1_heads.npz"
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


def convert_lpips_heads(pth_path: str | os.PathLike, out_path: str | os.PathLike = HEADS_FILE) -> None:
    """One-off: the lpips wheel's `weights/v0.1/alex.pth` -> the shipped heads .npz."""
    sd = read_state_dict(pth_path)
    heads = {f"lin{i}": np.asarray(sd[f"lin{i}.model.1.weight"], np.float32).reshape(-1) for i in range(5)}
    from ibo_jax.io import write_npz

    write_npz(out_path, heads)


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
    if heads is None:
        heads = HEADS_FILE
    hd = heads if isinstance(heads, Mapping) else dict(np.load(heads))
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
