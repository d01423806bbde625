"""Control heatmaps: explanations whose quality is known, scored like CAM methods, never ranked.

    names, maps = controls.make(("random", "oracle", "graded", "oracle_shifted"), key=key,
                                index=ev["index"], tumor_mask=ev["tumor_mask"])    # maps [N, C, H, W]

- `random`: smooth random map (uniform noise on a coarse grid, bilinear upsampling), one key per
  patch index; the floor.
- `oracle`: the annotation, Gaussian-smoothed; the ceiling of plausibility.
- `graded` (expands to graded_0, graded_25, ..., graded_100): the oracle degraded on nested random
  sets S_a of smooth blobs with |S_a| = a * HW, where its values are replaced by the random map's.
  The oracle is almost binary, so blending it with noise keeps its pixel order up to a blend of
  0.5; replacing it on S_a does not: the expected tumor share of its top-q pixels falls as a
  grows, so under the counterfactual strategy the fixed-fraction deletion AUC must rise with a
  (docs/method.md). Their known order is the trust checks' test of a strategy.
- `oracle_shifted`: the oracle rolled by half the patch in both axes: plausible-looking but wrong
  (reported beside the graded ones, outside their order).

Derived controls, made from each ranked method's own map (`derive`, explain.derived_controls):

    names, maps, parent = controls.derive(("smooth", "shuffle"), heat, methods, key=key, index=ev["index"],
                                          sigma_px=3.2, shares=(0.3, 0.6, 1.0))  # maps [N, D, H, W]

- `<method>_smooth`: the map Gaussian-smoothed (sigma_px, mode 'nearest'), min-max scaled to [0, 1]
  (a monotone rescaling: the pixel order is the filtered map's). Smoothing adds no information:
  under a strategy without blur bias it must not gain more than under the counterfactual
  (trust check `blur_bias`, after Song et al.).
- `<method>_shuffle_<percent>`: the values of a random share s of the map's pixels permuted among
  themselves (F-Fidelity's degradation check): one random pixel order per (patch index, method),
  S_s = its first round(s * HW) pixels (nested in s), each pixel of S_s takes the value of the next
  one in that order (a cycle: every pixel of S_s moves when |S_s| >= 2, the multiset of values is
  the map's). Known order: s = 0 (the original) better than each larger s (trust check `shuffle`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax import rng

GRADED_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
KNOWN = ("random", "oracle", "graded", "oracle_shifted")
DERIVED = ("smooth", "shuffle")  # controls made from each ranked method's own map
SHUFFLE_SHARES = (0.3, 0.6, 1.0)


def graded_name(a: float) -> str:
    return f"graded_{int(round(100 * a))}"


def expand(names: Sequence[str], levels: Sequence[float] = GRADED_LEVELS) -> list[str]:
    """Control names with 'graded' expanded to one name per level."""
    bad = [c for c in names if c not in KNOWN]
    if bad:
        raise ValueError(f"explain.controls: unknown {bad}; expected some of {KNOWN}")
    out = []
    for c in names:
        out.extend(graded_name(a) for a in levels) if c == "graded" else out.append(c)
    return out


def graded_level(name: str) -> float | None:
    """a of a graded control's name (graded_25 -> 0.25), None for any other name."""
    return int(name[len("graded_"):]) / 100.0 if name.startswith("graded_") else None


def _minmax(x: np.ndarray) -> np.ndarray:
    lo = x.min(axis=(-2, -1), keepdims=True)
    return (x - lo) / (1e-7 + (x - lo).max(axis=(-2, -1), keepdims=True))


def _smooth_noise(key: jax.Array, tag: str, index: np.ndarray, size: tuple[int, int], grid: int) -> np.ndarray:
    from ibo_jax import cam

    keys = jnp.stack([rng.fold(key, tag, int(i)) for i in index])
    noise = jax.vmap(lambda k: jax.random.uniform(k, (grid, grid)))(keys)  # [N, g, g]
    return np.asarray(cam.minmax(cam.resize(noise, size)), np.float32)


def random_control(key: jax.Array, index: np.ndarray, size: tuple[int, int], grid: int) -> np.ndarray:
    """Smooth random heatmaps [N, H, W] in [0, 1], one key per patch index."""
    return _smooth_noise(key, "random", index, size, grid)


def oracle_control(masks: np.ndarray, sigma_px: float) -> np.ndarray:
    """Ground-truth masks [N, H, W] -> smoothed maps in [0, 1] (empty mask -> zeros)."""
    from scipy.ndimage import gaussian_filter

    from ibo_jax import cam

    out = np.stack([gaussian_filter(m.astype(np.float32), sigma_px, mode="nearest") for m in masks])
    return np.asarray(cam.minmax(jnp.asarray(out)), np.float32)


def nested_sets(field: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """bool [N, A, H, W]: S_a = the round(a * HW) pixels of highest `field` value, nested in a."""
    n, h, w = field.shape
    order = np.argsort(-field.reshape(n, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(h * w), order.shape), axis=1)
    counts = np.round(np.asarray(levels, np.float64) * h * w).astype(np.int64)
    return (rank[:, None, :] < counts[None, :, None]).reshape(n, len(counts), h, w)


def graded_controls(oracle: np.ndarray, random_map: np.ndarray, blobs: np.ndarray,
                    levels: Sequence[float] = GRADED_LEVELS) -> np.ndarray:
    """[N, A, H, W]: the oracle with its values on S_a (smooth blobs, |S_a| = a HW) replaced by
    the random map's."""
    sets = nested_sets(blobs, levels)
    return np.where(sets, random_map[:, None], oracle[:, None]).astype(np.float32)


def make(names: Sequence[str], *, key: jax.Array, index: np.ndarray, tumor_mask: np.ndarray,
         random_grid: int = 8, oracle_sigma: float = 0.02, blob_grid: int = 6,
         levels: Sequence[float] = GRADED_LEVELS) -> tuple[list[str], np.ndarray]:
    """(expanded names, maps float32 [N, C, H, W] in [0, 1]) of the requested controls."""
    n, h, w = tumor_mask.shape
    expanded = expand(names, levels)
    rand = random_control(key, index, (h, w), random_grid)
    oracle = oracle_control(tumor_mask, oracle_sigma * max(h, w))
    maps = []
    for c in names:
        if c == "random":
            maps.append(rand[:, None])
        elif c == "oracle":
            maps.append(oracle[:, None])
        elif c == "graded":
            blobs = _smooth_noise(key, "graded_blobs", index, (h, w), blob_grid)
            maps.append(graded_controls(oracle, rand, blobs, levels))
        elif c == "oracle_shifted":
            maps.append(np.roll(oracle, (h // 2, w // 2), axis=(-2, -1))[:, None])
    out = np.concatenate(maps, axis=1) if maps else np.zeros((n, 0, h, w), np.float32)
    return expanded, out


# ------------------------------------------------------------------- derived from a method's own map


def smooth_name(method: str) -> str:
    return f"{method}_smooth"


def shuffle_name(method: str, share: float) -> str:
    return f"{method}_shuffle_{int(round(100 * share))}"


def check_derived(kinds: Sequence[str], shares: Sequence[float] = SHUFFLE_SHARES) -> None:
    """Errors naming the explain fields: unknown kinds, shares outside (0, 1] or equal in percent."""
    bad = [k for k in kinds if k not in DERIVED]
    if bad:
        raise ValueError(f"explain.derived_controls: unknown {bad}; expected some of {DERIVED}")
    if "shuffle" in kinds:
        pct = [int(round(100 * float(s))) for s in shares]
        if not pct or any(not 0 < p <= 100 for p in pct) or len(set(pct)) != len(pct):
            raise ValueError(f"explain.shuffle_shares: expected distinct shares in (0, 1] (whole percents), "
                             f"got {list(shares)}")


def derived_names(kinds: Sequence[str], methods: Sequence[str], shares: Sequence[float] = SHUFFLE_SHARES) -> list[str]:
    """Per method, in order: <method>_smooth, then <method>_shuffle_<percent> per share."""
    check_derived(kinds, shares)
    out = []
    for m in methods:
        if "smooth" in kinds:
            out.append(smooth_name(m))
        if "shuffle" in kinds:
            out.extend(shuffle_name(m, s) for s in shares)
    return out


def derived_of(name: str, methods: Sequence[str]) -> tuple[str, str, float | None] | None:
    """(method, 'smooth' or 'shuffle', share or None) of a derived control's name whose method is
    one of `methods` ('gradcam_shuffle_60' -> ('gradcam', 'shuffle', 0.6)); None for other names."""
    if name.endswith("_smooth") and name[: -len("_smooth")] in methods:
        return name[: -len("_smooth")], "smooth", None
    base, sep, pct = name.rpartition("_shuffle_")
    if sep and base in methods and pct.isdigit():
        return base, "shuffle", int(pct) / 100.0
    return None


def kind_of(name: str, methods: Sequence[str]) -> str | None:
    """The kind of a control ('random', 'oracle', 'graded', 'oracle_shifted', 'smooth', 'shuffle'),
    derived controls of `methods` (the ranked methods) included; None for an unknown name."""
    if graded_level(name) is not None:
        return "graded"
    if name in KNOWN:
        return name
    d = derived_of(name, methods)
    return d[1] if d else None


def smooth_maps(heat: np.ndarray, sigma_px: float) -> np.ndarray:
    """[N, H, W] -> the Gaussian-filtered maps (sigma_px, mode 'nearest'), min-max scaled, float32."""
    from scipy.ndimage import gaussian_filter

    out = np.stack([gaussian_filter(np.asarray(h, np.float32), float(sigma_px), mode="nearest") for h in heat])
    return _minmax(out).astype(np.float32)


def shuffle_maps(heat: np.ndarray, keys: jax.Array, shares: Sequence[float]) -> np.ndarray:
    """[N, H, W] with one key per map [N] -> [N, S, H, W]: per share s, the values of the first
    round(s * HW) pixels of the map's random pixel order moved one step along that order (a cycle)."""
    heat = np.asarray(heat)
    n, h, w = heat.shape
    order = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, h * w))(keys))  # [N, HW]
    flat = heat.reshape(n, h * w)
    rows = np.arange(n)[:, None]
    out = np.repeat(flat[:, None], len(shares), axis=1)  # [N, S, HW]
    for i, s in enumerate(shares):
        sel = order[:, : int(round(float(s) * h * w))]
        out[rows, i, sel] = flat[rows, np.roll(sel, -1, axis=1)]
    return out.reshape(n, len(shares), h, w)


def derive(kinds: Sequence[str], heat: np.ndarray, methods: Sequence[str], *, key: jax.Array, index: np.ndarray,
           sigma_px: float, shares: Sequence[float] = SHUFFLE_SHARES) -> tuple[list[str], np.ndarray, list[int]]:
    """Derived controls of the methods' maps heat [N, M, H, W]: (names as `derived_names`, maps
    float32 [N, D, H, W], parent [D] = the column of `heat` each is made from). The shuffle of
    (patch, method) draws from fold(key, 'shuffle', method, patch index): independent of batching."""
    names = derived_names(kinds, methods, shares)
    n, _, h, w = heat.shape
    maps, parent = [], []
    for j, m in enumerate(methods):
        x = np.asarray(heat[:, j], np.float32)
        if "smooth" in kinds:
            maps.append(smooth_maps(x, sigma_px)[:, None])
            parent.append(j)
        if "shuffle" in kinds:
            keys = jnp.stack([rng.fold(key, "shuffle", m, int(i)) for i in index]) if n else None
            maps.append(shuffle_maps(x, keys, shares) if n else np.zeros((0, len(shares), h, w), np.float32))
            parent.extend([j] * len(shares))
    out = np.concatenate(maps, axis=1).astype(np.float32) if maps else np.zeros((n, 0, h, w), np.float32)
    return names, out, parent
