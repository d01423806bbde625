"""Synthetic H&E-like histology patches with exact tumor masks (the embedded default data).

Each patch is rendered from its own key, `fold(root_key(seed), "synthetic", index)`, so the bytes
of patch `i` do not depend on which batch it was generated in. Rendering is one jitted, vmapped
JAX program over a fixed-size batch (value noise by separable gathers, nuclei on a jittered cell
grid where each pixel checks only the 4 nearest cells), then a Beer-Lambert stain model:

    I = I0 * exp(-(c_H * h + c_E * e))       h, e: per-slide H&E optical-density vectors

Normal tissue: eosin stroma with wavy fibres, small round dark lymphocyte nuclei (density varies
from sparse stroma to dense lymphoid tissue), spindle fibroblast nuclei, fat holes and vessels.
Tumor: a ragged region (10-80% of the patch, the exact `tumor_mask`) of crowded, enlarged,
irregular, hyperchromatic nuclei with coarse chromatin. Around a tumor region lymphocytes thin
out (linearly to zero at b = 6 px at 64 from the region) so the total nuclear area stays closer to
the normal range, and nuclei of both kinds share a tonal spread: a global colour histogram is a
weak cue (logistic regression on 48 histogram bins, new pseudo-slides: ~0.77 accuracy,
benchmarks/synthetic_throughput.py) while the demo's small ResNet reaches ~0.98 on the test
slides; nuclear size, shape and crowding carry the label.

Counterfactual twins (`generate(..., counterfactual=True)`): every label-dependent term of the
render (the region, the thinning band, nuclei left out of the region) lies within r =
`reach_px(S)` (b plus a tumor nucleus's reach, ~12.6 px at 64) of the region, so re-rendering the
same draws with the region empty gives the patch as it would look without tumor, equal to it
beyond r. `cue='global'` is the earlier render: tumor patches also lose lymphocytes everywhere
(evidence outside the annotation), and its twin differs everywhere.
Sizes from 64 to 512: every length scales with image_size / 64 (same field of view).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax.rng import root_key, stable_int

# Macenko's reference optical-density vectors (rows: hematoxylin, eosin; columns: R, G, B).
REFERENCE_STAIN = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], np.float32)
MIN_SIZE, MAX_SIZE = 64, 512
CUES = ("local", "global")
THIN_BAND_AT_64 = 6.0  # b at 64 px (scaled with the size): the lymphocyte-thinning band
THIN_STRENGTH = 1.0  # share of the lymphocytes removed at the region's edge (linear to 0 at b)
_TAG_PATCH, _TAG_PLAN, _TAG_STAIN = (stable_int(s) for s in ("synthetic", "plan", "stain"))


def _check_size(image_size: int) -> None:
    if not (MIN_SIZE <= int(image_size) <= MAX_SIZE):
        raise ValueError(f"image_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {image_size}")


class _Pool:
    """All of a patch's random numbers come from one flat uniform draw, sliced in a fixed order:
    one threefry call keeps the compiled program small (each `jax.random` call inlines its own
    threefry, and dozens of them made compiling take minutes), and uniform draws avoid normal's
    erfinv (it took a third of the render time). With key=None it only counts what is asked for
    (used once per size, under eval_shape)."""

    def __init__(self, key=None, n: int = 0):
        self.pos = 0
        self.flat = None if key is None else jax.random.uniform(key, (n,))

    def uniform(self, shape, lo=0.0, hi=1.0):
        size = int(np.prod(shape))
        start, self.pos = self.pos, self.pos + size
        if self.flat is None:
            return jnp.zeros(shape, jnp.float32)
        return lo + (hi - lo) * self.flat[start:start + size].reshape(shape)

    def normal(self, shape):
        """Zero-mean, unit-variance noise: uniform on [-sqrt(3), sqrt(3)] (looks the same here)."""
        return self.uniform(shape, -1.7320508, 1.7320508)


def _value_noise(pool: _Pool, grid: int, n: int) -> jax.Array:
    """Smooth noise [n, n] ~ N(0, 1)-ish: a (grid+1)^2 normal lattice, smoothstep-interpolated
    over blocks of ceil(n / grid) pixels, cropped to n. Slices and broadcasting only: a matmul
    would change its summation order with the batch size (bytes would depend on batching) and
    gathers are slow on XLA:CPU."""
    b = -(-n // grid)
    f = (np.arange(b) + 0.5) / b
    f = jnp.asarray(f * f * (3.0 - 2.0 * f), jnp.float32)  # [b]
    lat = pool.normal((grid + 1, grid + 1))
    rows = lat[:-1, None, :] * (1.0 - f)[None, :, None] + lat[1:, None, :] * f[None, :, None]
    rows = rows.reshape(grid * b, grid + 1)
    out = rows[:, :-1, None] * (1.0 - f)[None, None, :] + rows[:, 1:, None] * f[None, None, :]
    return out.reshape(grid * b, grid * b)[:n, :n]


def _nuclei(size, cell, present, cy, cx, radius, aniso, angle, value, wobble, edge):
    """Soft nuclei on a jittered grid: returns (coverage [S, S], coverage * value [S, S]).

    Cells are `cell` x `cell` pixels (even), G x G of them cover the canvas; per-cell arrays are
    [G, G], centres (cy, cx) in pixels. A nucleus must not reach past the middle of a
    neighbouring cell, so a pixel only checks its own cell and the 3 cells toward its quadrant.
    The canvas is viewed as [G, 2, c/2, G, 2, c/2] (cell, half, offset): the neighbour of half
    0 is the previous cell and of half 1 the next, so everything is broadcasting, no gathers
    (gathers are slow on XLA:CPU). `wobble` [S, S] scales the radius per pixel (ragged outlines).
    Coverage uses (r^2 - d^2) / 2r ~ r - d near the edge (no square root)."""
    g, h = present.shape[0], cell // 2
    canvas = g * cell
    pos = (jnp.arange(canvas, dtype=jnp.float32) + 0.5).reshape(g, 2, h)
    py, px = pos[:, :, :, None, None, None], pos[None, None, None, :, :, :]
    wob = jnp.broadcast_to(jnp.asarray(wobble, jnp.float32), (size, size))
    wob = jnp.pad(wob, ((0, canvas - size), (0, canvas - size)), mode="edge")
    wob = wob.reshape(g, 2, h, g, 2, h)
    params = jnp.stack([present, cy, cx, radius * radius, 1.0 / (aniso * aniso),
                        jnp.cos(angle), jnp.sin(angle), value, 1.0 / (2.0 * radius * edge)])
    params = jnp.pad(params, ((0, 0), (1, 1), (1, 1)))  # border cells: present = 0
    rows = {False: params[:, 1:g + 1, None], True: jnp.stack([params[:, :g], params[:, 2:]], 2)}
    cov_best = val_best = jnp.zeros((g, 2, h, g, 2, h), jnp.float32)
    for ny in (False, True):
        r = rows[ny]  # [9, G, 1 or 2, G+2]
        for nx in (False, True):
            p = jnp.stack([r[..., :g], r[..., 2:]], -1) if nx else r[..., 1:g + 1, None]
            p = p[:, :, :, None, :, :, None]  # [9, G, 1|2, 1, G, 1|2, 1]
            dy, dx = py - p[1], px - p[2]
            u, v = dx * p[5] + dy * p[6], dy * p[5] - dx * p[6]
            d2 = u * u + v * v * p[4]
            cov = jnp.clip((p[3] * wob * wob - d2) * p[8] + 0.5, 0.0, 1.0) * p[0]
            cov_best = jnp.maximum(cov_best, cov)
            val_best = jnp.maximum(val_best, cov * p[7])
    crop = lambda a: a.reshape(canvas, canvas)[:size, :size]
    return crop(cov_best), crop(val_best)


def _cells(pool, size, cell_px, lo=0.0, hi=1.0):
    """Jittered grid of integer cells: (G, cell, centres cy, cx [G, G] at an offset in [lo, hi)
    of the cell, 8 uniform draws per cell [8, G, G])."""
    cell = 2 * max(1, int(round(cell_px / 2)))
    g = -(-size // cell)
    jit_ = pool.uniform((2, g, g), lo, hi)
    cy = (jnp.arange(g)[:, None] + jit_[0]) * cell
    cx = (jnp.arange(g)[None, :] + jit_[1]) * cell
    return g, cell, cy, cx, pool.uniform((8, g, g))


def _threshold_for_area(field, area, steps: int = 20):
    """t with mean(field > t) ~= area, by bisection (a full sort is slow on XLA:CPU)."""

    def body(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        above = jnp.mean(field > mid) > area
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, steps, body, (field.min(), field.max()))
    return 0.5 * (lo + hi)


@functools.cache
def _pool_size(size: int) -> int:
    """How many random numbers one patch of this size uses (counted by tracing)."""
    pool = _Pool()
    stain = {"h_vec": jnp.zeros(3), "e_vec": jnp.zeros(3), "h_scale": 1.0, "e_scale": 1.0, "i0": 1.0}
    jax.eval_shape(lambda: _render_one(pool, stain, jnp.int32(1), jnp.zeros(2), size))
    return pool.pos  # the same for every cue and for twins: no draw depends on them


def _dilate(m: jax.Array, cross: bool) -> jax.Array:
    """One 3x3 binary dilation of m [S, S] (float 0/1): the 4-neighbourhood or the 8-neighbourhood."""
    p = jnp.pad(m, 1)
    s0, s1 = m.shape
    shifts = [(0, 1), (1, 0), (1, 2), (2, 1)] + ([] if cross else [(0, 0), (0, 2), (2, 0), (2, 2)])
    out = m
    for dy, dx in shifts:
        out = jnp.maximum(out, p[dy:dy + s0, dx:dx + s1])
    return out


def _proximity(region: jax.Array, steps: int) -> jax.Array:
    """[S, S] in [0, 1]: 1 on the region, falling linearly to 0 at `steps` px from it (an octagonal
    distance: dilations alternating the 8- and the 4-neighbourhood), exactly 0 beyond."""
    m = region.astype(jnp.float32)
    acc = m
    for i in range(steps - 1):
        m = _dilate(m, cross=i % 2 == 1)
        acc = acc + m
    return acc / steps


def band_px(image_size: int) -> int:
    """b: lymphocytes thin out within this many px of a tumor region (local cue)."""
    return max(1, int(round(THIN_BAND_AT_64 * image_size / 64.0)))


def reach_px(image_size: int) -> float:
    """r: the rendering of a patch depends on its label only within r px of the tumor region
    (local cue): the thinning band b plus the largest tumor nucleus's reach (0.7 of its 8 px cell
    at 64, plus the soft edge), which also bounds lymphocytes and fibroblasts left out of it."""
    k = image_size / 64.0
    tumor_cell = 2 * max(1, int(round(8.0 * k / 2)))
    return band_px(image_size) + 0.7 * tumor_cell + 1.0


def _render_one(ks: _Pool, stain, label, tumor_area, size: int, cue: str = "local", twin: bool = False):
    """One patch: float RGB [S, S, 3] in [0, 255] and the tumor mask [S, S] bool.

    cue 'local': every label-dependent term is confined to the tumor region dilated by
    `reach_px(size)`. cue 'global': lymphocytes of a tumor patch also thin out everywhere (a
    non-local cue). twin=True renders the same draws with every label-dependent term off (the
    region empty, no thinning): the patch as it would look without tumor. The returned mask is the
    tumor region either way."""
    k = size / 64.0
    coord = jnp.arange(size, dtype=jnp.float32) + 0.5  # pixel centres
    u = ks.uniform((12,))  # patch-level draws

    # Tumor region: 3-octave value noise thresholded at the (1 - area) quantile.
    field = (_value_noise(ks, 3, size) + 0.45 * _value_noise(ks, 7, size)
             + 0.25 * _value_noise(ks, 16, size))
    area = tumor_area[0] + (tumor_area[1] - tumor_area[0]) * u[0]
    mask = (field > _threshold_for_area(field, area)) & (label == 1)  # [S, S], the annotation
    region = jnp.zeros_like(mask) if twin else mask  # where the tumor is rendered

    # Stroma: eosin with wavy fibres along a slowly turning direction.
    theta = u[1] * jnp.pi + 0.9 * _value_noise(ks, 2, size)
    warp = 2.5 * _value_noise(ks, 4, size)
    freq = (9.0 + 7.0 * u[2]) * 2.0 * jnp.pi / size
    along = coord[None, :] * jnp.cos(theta) + coord[:, None] * jnp.sin(theta)
    fibre = (0.5 + 0.5 * jnp.sin(freq * along + warp + 6.3 * u[3])) ** 3
    fibre_amp = 0.3 + 0.7 * u[4]
    e_low = 0.12 * _value_noise(ks, 5, size)
    chrom = _value_noise(ks, 28, size)  # chromatin / cytoplasm granularity
    eosin = 0.75 * (1.0 - 0.35 * fibre_amp + 0.75 * fibre_amp * fibre + e_low)
    # Between tumor cells: cytoplasm plus compressed fibres (keeps the colour histogram alike).
    eosin = jnp.where(region, 0.75 * (0.9 - 0.2 * fibre_amp + 0.4 * fibre_amp * fibre
                                      + 0.08 * chrom + e_low), eosin)
    hema = 0.08 + 0.04 * chrom  # faint background hematoxylin

    # Fat holes and vessels (up to 3), anywhere (inside the tumor region they stay in its mask).
    hy, hx = coord[:, None], coord[None, :]
    hp = ks.uniform((3, 6))
    hole_wobble = 1.0 + 0.12 * _value_noise(ks, 9, size)
    lumen = jnp.zeros((size, size))
    rim = jnp.zeros((size, size))
    rbc = jnp.zeros((size, size))
    for j in range(3):
        r = (0.05 + 0.1 * hp[j, 2]) * size
        d = jnp.sqrt((hy - hp[j, 0] * size) ** 2 + ((hx - hp[j, 1] * size) / (0.6 + 0.4 * hp[j, 3])) ** 2)
        d = d / hole_wobble
        on = hp[j, 4] < 0.3
        inside = jnp.clip((r - d) / (0.8 * k) + 0.5, 0.0, 1.0) * on
        ring = jnp.clip(1.0 - jnp.abs(d - r) / (1.2 * k), 0.0, 1.0) * on
        lumen, rim = jnp.maximum(lumen, inside), jnp.maximum(rim, ring)
        rbc = jnp.maximum(rbc, inside * (hp[j, 5] < 0.4) * (chrom > 0.2))  # vessels carry RBCs

    edge = 0.7
    # Lymphocytes: small, round, dark; density from sparse to lymphoid-dense, in clusters.
    g, cell, cy, cx, cu = _cells(ks, size, 4.0 * k, 0.05, 0.95)
    # Around a tumor the lymphocytes thin out so that the patch's total nuclear area stays in the
    # normal range (area is not the cue): near the region only (local), or everywhere (global).
    base = 0.15 + 0.75 * u[5]
    if cue == "global" and not twin:
        base = jnp.where(label == 1, jnp.clip((base - 1.7 * area) / (1.0 - area), 0.05, 0.95), base)
    dens = jnp.clip(base + 0.35 * _value_noise(ks, 3, g), 0.0, 0.95)
    at = lambda a, y, x: a[jnp.clip(y.astype(jnp.int32), 0, size - 1), jnp.clip(x.astype(jnp.int32), 0, size - 1)]
    free_at = lambda y, x: ~at(region, y, x) & (at(lumen, y, x) < 0.5)
    if cue == "local" and not twin:
        dens = dens * (1.0 - THIN_STRENGTH * at(_proximity(region, band_px(size)), cy, cx))
    lym_cov, lym_val = _nuclei(
        size, cell, (cu[0] < dens) & free_at(cy, cx), cy, cx, (1.3 + 0.45 * cu[1]) * k,
        0.8 + 0.2 * cu[2], cu[3] * jnp.pi, 1.05 + 0.4 * cu[4], 1.0, edge)

    # Fibroblasts: sparse elongated spindle nuclei aligned with the fibres.
    g, cell, cy, cx, cu = _cells(ks, size, 10.0 * k, 0.25, 0.75)
    ang = at(theta, cy, cx)
    fib_cov, fib_val = _nuclei(
        size, cell, (cu[0] < 0.35 * fibre_amp) & free_at(cy, cx), cy, cx, (3.0 + 1.2 * cu[1]) * k, 0.28 + 0.1 * cu[2], ang, 0.85 + 0.2 * cu[4], 1.0, edge)

    # Tumor cells: crowded, enlarged, irregular, hyperchromatic, coarse chromatin.
    # Centres kept 0.2 cell from the cell border, so a nucleus may reach 0.7 cell.
    g, cell, cy, cx, cu = _cells(ks, size, 8.0 * k, 0.2, 0.8)
    wob = 1.0 + 0.12 * jnp.clip(_value_noise(ks, 22, size), -1.5, 1.5)
    rmax = 0.7 * cell / 1.18 - 0.3
    tum_cov, tum_val = _nuclei(
        size, cell, (cu[0] < 0.93) & at(region, cy, cx), cy, cx,
        jnp.minimum((3.0 + 1.2 * cu[1]) * k, rmax), 0.6 + 0.35 * cu[2], cu[3] * jnp.pi,
        1.1 + 0.35 * cu[4], wob, edge)
    tum_val = tum_val * (0.85 + 0.22 * chrom)
    lym_val = lym_val * (0.88 + 0.2 * chrom)  # same tonal spread as tumor nuclei: shape is the cue

    nuc_cov = jnp.maximum(jnp.maximum(lym_cov, fib_cov), tum_cov)
    hema = hema + jnp.maximum(jnp.maximum(lym_val, fib_val), tum_val) * 1.5
    eosin = eosin * (1.0 - 0.6 * nuc_cov) + 0.25 * nuc_cov
    eosin = eosin * (1.0 + 0.6 * rim) * (1.0 - lumen) + 1.4 * rbc
    hema = hema * (1.0 - lumen)

    # Stain: per-slide vectors and scales, a little per-patch jitter, Beer-Lambert, pixel noise.
    ch = stain["h_scale"] * (0.93 + 0.14 * u[6])
    ce = stain["e_scale"] * (0.93 + 0.14 * u[7])
    od = (ch * hema)[..., None] * stain["h_vec"] + (ce * eosin)[..., None] * stain["e_vec"]
    od = od + 0.025 * ks.normal((size, size, 1))
    rgb = stain["i0"] * (0.97 + 0.03 * u[8]) * jnp.exp(-od)
    return rgb, mask


def _slide_stain(seed_key, slide):
    """Stain of one pseudo-slide: perturbed H&E vectors, concentration scales, white level."""
    k = jax.random.fold_in(jax.random.fold_in(seed_key, _TAG_STAIN), slide)
    u = jax.random.uniform(k, (11,))
    vecs = jnp.asarray(REFERENCE_STAIN) + 0.24 * (u[:6].reshape(2, 3) - 0.5)
    vecs = jnp.abs(vecs) / jnp.linalg.norm(vecs, axis=1, keepdims=True)
    scales = 0.75 + 0.5 * u[6:8]
    i0 = 232.0 + 20.0 * u[8:11]
    return {"h_vec": vecs[0], "e_vec": vecs[1], "h_scale": scales[0], "e_scale": scales[1],
            "i0": jnp.minimum(i0, 255.0)}


def slide_stain(seed: int, slide: int) -> dict[str, np.ndarray]:
    """The true stain of a pseudo-slide (numpy): h_vec, e_vec (unit OD vectors [3]), h_scale,
    e_scale, i0 [3] (white level). Per patch, the scales and white level jitter a few percent."""
    return {k: np.asarray(v) for k, v in jax.jit(_slide_stain)(root_key(seed), slide).items()}


def _plan_one(seed_key, index, n_slides, tumor_fraction):
    k = jax.random.fold_in(jax.random.fold_in(seed_key, _TAG_PLAN), index)
    u = jax.random.uniform(k, (2,))
    label = (u[0] < tumor_fraction).astype(jnp.int32)
    return label, jnp.minimum((u[1] * n_slides).astype(jnp.int32), n_slides - 1)


@functools.partial(jax.jit, static_argnames=("size", "cue", "counterfactual"))
def _generate_batch(seed_key, indices, n_slides, tumor_fraction, tumor_area, size: int, cue: str,
                    counterfactual: bool):
    to_u8 = lambda rgb: jnp.clip(jnp.round(rgb), 0, 255).astype(jnp.uint8)  # noqa: E731

    def one(index):
        label, slide = _plan_one(seed_key, index, n_slides, tumor_fraction)
        key = jax.random.fold_in(jax.random.fold_in(seed_key, _TAG_PATCH), index)
        stain = _slide_stain(seed_key, slide)
        rgb, mask = _render_one(_Pool(key, _pool_size(size)), stain, label, tumor_area, size, cue)
        out = (to_u8(rgb), mask, label, slide)
        if counterfactual:  # the same pool, consumed in the same order, every label term off
            twin, _ = _render_one(_Pool(key, _pool_size(size)), stain, label, tumor_area, size, cue, twin=True)
            out += (to_u8(twin),)
        return out

    return jax.vmap(one)(indices)


_plan_batch = jax.jit(jax.vmap(_plan_one, in_axes=(None, 0, None, None)))


def plan(indices, *, seed: int, n_slides: int = 20, tumor_fraction: float = 0.5):
    """(label int32 [N], slide int32 [N]) of patches, without rendering them."""
    idx = jnp.asarray(np.asarray(indices, np.int64) & 0x7FFFFFFF, jnp.uint32)
    label, slide = _plan_batch(root_key(seed), idx, n_slides, tumor_fraction)
    return np.asarray(label), np.asarray(slide)


def generate(indices, *, seed: int, image_size: int = 64, n_slides: int = 20,
             tumor_fraction: float = 0.5, tumor_area: tuple[float, float] = (0.1, 0.8),
             batch_size: int | None = None, cue: str = "local",
             counterfactual: bool = False) -> dict[str, np.ndarray]:
    """Renders patches by index. Returns numpy: image uint8 [N, S, S, 3], tumor_mask bool
    [N, S, S], label int32 [N] (1 = tumor, about `tumor_fraction` of them), slide int32 [N]
    (pseudo-slide id in [0, n_slides): patches of a slide share a stain), index int64 [N].
    Patch i's bytes depend only on (seed, i, image_size, n_slides, tumor_fraction, tumor_area,
    cue), not on `batch_size` (patches per compiled call; default: 128 at 64x64, fewer when larger).

    cue: 'local' (the label changes pixels only within `reach_px(image_size)` of the tumor region)
    or 'global' (tumor patches also have fewer lymphocytes everywhere: evidence outside the
    annotation). counterfactual=True also returns twin uint8 [N, S, S, 3]: the same render with
    every label-dependent term off, i.e. the patch without its tumor. A normal patch's twin is
    the patch byte for byte; with cue 'local' a tumor patch's twin differs only within r of the
    region."""
    _check_size(image_size)
    if cue not in CUES:
        raise ValueError(f"cue must be one of {CUES}, got {cue!r}")
    indices = np.asarray(indices, np.int64).reshape(-1)
    if n_slides < 1:
        raise ValueError(f"n_slides must be >= 1, got {n_slides}")
    if not (0.0 <= tumor_fraction <= 1.0):
        raise ValueError(f"tumor_fraction must be in [0, 1], got {tumor_fraction}")
    if not (0.0 < tumor_area[0] <= tumor_area[1] < 1.0):
        raise ValueError(f"tumor_area must be 0 < lo <= hi < 1, got {tumor_area}")
    if indices.size and (indices.min() < 0 or indices.max() > 0x7FFFFFFF):
        raise ValueError("indices must be in [0, 2**31)")
    n, s = indices.size, int(image_size)
    if batch_size is None:
        batch_size = max(1, (128 * 64 * 64) // (s * s))
    out = {"image": np.empty((n, s, s, 3), np.uint8), "tumor_mask": np.empty((n, s, s), bool),
           "label": np.empty((n,), np.int32), "slide": np.empty((n,), np.int32), "index": indices}
    names = ("image", "tumor_mask", "label", "slide")
    if counterfactual:
        out["twin"] = np.empty((n, s, s, 3), np.uint8)
        names += ("twin",)
    key = root_key(seed)
    area = jnp.asarray(tumor_area, jnp.float32)
    def collect(start, res):
        m = min(batch_size, n - start)
        for name, arr in zip(names, res, strict=True):
            out[name][start:start + m] = np.asarray(arr)[:m]

    pending = None  # one batch in flight: the next is dispatched before this one is copied out
    for start in range(0, n, batch_size):
        chunk = indices[start:start + batch_size]
        padded = np.pad(chunk, (0, batch_size - chunk.size), mode="edge")  # one compiled shape
        res = _generate_batch(key, jnp.asarray(padded, jnp.uint32), n_slides,
                              float(tumor_fraction), area, s, cue, bool(counterfactual))
        if pending is not None:
            collect(*pending)
        pending = (start, res)
    if pending is not None:
        collect(*pending)
    return out


def hematoxylin_share(images: np.ndarray, masks: np.ndarray, slides: np.ndarray, *, seed: int) -> np.ndarray:
    """Share of hematoxylin-dominant pixels inside each mask, by colour deconvolution with the
    pseudo-slide's true stain (`slide_stain`): per pixel the optical density -log(I / i0) is
    split into hematoxylin and eosin concentrations (least squares on the two stain vectors) and
    the pixel counts when hematoxylin's is the larger. images uint8 [N, S, S, 3], masks bool
    [N, S, S], slides int [N] -> [N] (NaN where a mask is empty). Nuclei are where this is high."""
    images = np.asarray(images)
    masks = np.asarray(masks, bool)
    out = np.full(len(images), np.nan)
    stains = {}
    for i, (img, m, sl) in enumerate(zip(images, masks, np.asarray(slides), strict=True)):
        if not m.any():
            continue
        if int(sl) not in stains:
            st = slide_stain(seed, int(sl))
            stains[int(sl)] = (np.linalg.pinv(np.stack([st["h_vec"], st["e_vec"]], 1)), st["i0"])
        pinv, i0 = stains[int(sl)]  # pinv [2, 3]
        px = np.maximum(img[m].astype(np.float64), 1.0)  # [P, 3]
        od = -np.log(np.minimum(px / i0, 1.0))
        conc = od @ pinv.T  # [P, 2] (hematoxylin, eosin)
        out[i] = float(np.mean(conc[:, 0] > conc[:, 1]))
    return out
