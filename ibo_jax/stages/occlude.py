"""Stage `occlude`: every occlusion strategy applied to every deletion mask of every heatmap.

Inputs: `explain/eval_set.npz` (index, image uint8 [N,H,W,3], label, tumor_mask) and
`explain/heatmaps.npz` (methods [M], heatmaps float16 [N,M,H,W], levels int8 [N,M,H,W],
n_levels, valid bool [N,M]); for `ibo`, the EMA DDPM of `train_ddpm`.

Curves (config `curves`): 'morf' = the progressive masks M1..Mn of the importance levels
(Mi = levels 1..min(i, L-1)); 'fixed' = the top q of pixels by heatmap value for each q of
config `fractions` (the same grid for every method); 'lerf' = least relevant levels first;
'insertion' = n+1 points: everything removed, then M1..Mn put back (the complement of Mi removed).
Only (image, method) pairs whose heatmap is valid (L >= 2) are occluded.

On-disk layout (occlude/):
  layout.json   strategies, curves, n_masks, fractions {curve: [q]}, draws {strategy: D},
                methods, image_size, blocks [{strategy, curve, name, file, rows}]
  masks.npz     methods [M], areas_<curve> float32 [N, M, n] (|mask|/HW), n_levels int32 [N, M],
                valid bool [N, M], fractions float32 [Q]
  chunks/<strategy>__<curve>__<name>.npz, one per (strategy, curve, chunk of images):
                image uint8 [R, H, W, 3] (the exact bytes the score stage re-predicts),
                pos int32 [R] (eval-set position), method int16 [R] (index into methods),
                mask int16 [R] (1..n), draw int16 [R]
  grid.png      strategies x masks for a few patches (first method)
Randomness: row (image, method, curve, mask, draw) of a strategy draws from
fold(ctx.key, strategy, image index, method, '<curve>:<mask>', draw): independent of batching,
chunking, host count and resume. Chunk c of a curve is written by process c % process_count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ibo_jax import io as ibo_io
from ibo_jax import occlusion
from ibo_jax.evaluation import levels as lv
from ibo_jax.rng import fold, stable_int

CURVES = ("morf", "fixed", "lerf", "insertion")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.strategies = ("blackening", "blurring", "mean", "histogram", "nli", "ibo")
    c.curves = ("morf", "fixed")
    c.n_masks = 4
    c.k = 5  # importance levels, only used if explain/heatmaps.npz carries no levels
    c.fractions = (0.1, 0.25, 0.5)  # q grid of the fixed-fraction curve
    # Strategies for the non-morf curves; empty = all of `strategies`. IBO is left out of the
    # demo's fixed-fraction curve: RePaint costs ~1-4 s per 64 px inpainting on 2 CPU cores.
    c.fixed_strategies = ("blackening", "blurring", "mean", "histogram", "nli")
    c.n_draws = 1  # draws per mask for random strategies (histogram, nli, ibo)
    c.images_per_chunk = 4
    c.blur_sigma_at_224 = 10.0
    c.nli_noise = 0.01
    c.nli_solver = "scipy"  # or 'cg' (batched JAX, for accelerators)
    c.ibo = ml_collections.ConfigDict(
        dict(t_T=10, jump_length=5, jump_n_sample=2, batch_size=32, eta=-1.0, bf16=False)
    )  # 15 UNet calls per inpainting (the study: 250/10/10, 2,410 calls); eta < 0: official DDPM steps
    c.grid_patches = 2
    return c


def _options(name: str, cfg, ctx) -> dict:
    if name == "blurring":
        return {"sigma_at_224": float(cfg.blur_sigma_at_224)}
    if name == "nli":
        return {"noise": float(cfg.nli_noise), "solver": str(cfg.nli_solver)}
    if name == "ibo":
        from ibo_jax.train.ddpm import load_eps_model

        c = cfg.ibo
        return {
            # bf16 through the module's own dtype (bf16 convolutions and attention): casting only
            # the parameters leaves the UNet computing in fp32 (measured on an H200).
            "eps_model": load_eps_model(ctx.input_dir("train_ddpm"), dtype=jnp.bfloat16 if c.bf16 else None),
            "t_T": int(c.t_T), "jump_length": int(c.jump_length), "jump_n_sample": int(c.jump_n_sample),
            "batch_size": int(c.batch_size), "eta": None if float(c.eta) < 0 else float(c.eta),
            # the chunks are split over processes: each runs its own on its local devices
            "mesh": None, "progress": False,
        }
    return {}


def _read_inputs(explain_dir: Path) -> tuple[dict, dict]:
    ev = ibo_io.read_npz(explain_dir / "eval_set.npz")
    hm = ibo_io.read_npz(explain_dir / "heatmaps.npz")
    for key in ("image", "index"):
        if key not in ev:
            raise ValueError(f"{explain_dir}/eval_set.npz: missing array {key!r}")
    for key in ("methods", "heatmaps"):
        if key not in hm:
            raise ValueError(f"{explain_dir}/heatmaps.npz: missing array {key!r}")
    n, h, w, _ = ev["image"].shape
    shape = (n, len(hm["methods"]), h, w)
    for key in ("heatmaps", "levels"):
        if key in hm and hm[key].shape != shape:
            raise ValueError(f"{explain_dir}/heatmaps.npz: {key} has shape {hm[key].shape}, expected "
                             f"[N, M, H, W] = {shape} (eval_set.npz images and the methods list)")
    return ev, hm


def n_points(curve: str, n_masks: int, fractions) -> int:
    """Occluded images per (image, method) of a curve (the original is not counted)."""
    if curve == "fixed":
        return len(fractions)
    return n_masks + 1 if curve == "insertion" else n_masks


def curve_masks(curve: str, heat: np.ndarray, levels: np.ndarray, n_levels: np.ndarray,
                n_masks: int, fractions) -> np.ndarray:
    """Remove-masks of one curve for heatmaps [B, H, W] -> bool [B, n, H, W]."""
    if curve == "morf":
        return lv.progressive_masks(levels, n_masks, n_levels)
    if curve == "fixed":
        return lv.fraction_masks(heat, fractions)
    if curve == "lerf":
        from ibo_jax.evaluation.deletion import lerf_masks

        return lerf_masks(levels, n_masks)
    if curve == "insertion":
        from ibo_jax.evaluation.deletion import insertion_masks

        return insertion_masks(lv.progressive_masks(levels, n_masks, n_levels))
    raise ValueError(f"occlude.curves: unknown curve {curve!r}; expected some of {CURVES}")


def _row_keys(base: jax.Array, ids: np.ndarray) -> jax.Array:
    """fold(base, *row) for rows of stable ints ids [R, 4], vectorized -> keys [R]."""
    def one(r):
        k = base
        for j in range(ids.shape[1]):
            k = jax.random.fold_in(k, r[j])
        return k

    return jax.vmap(one)(jnp.asarray(ids, jnp.uint32))


def _occlude_chunk(name, opts, ev, methods, heat, levels, n_levels, valid, pos_list, curve, cfg,
                   n_draws, key) -> dict:
    rows = {"pos": [], "method": [], "mask": [], "draw": []}
    masks_all, ids = [], []
    n_pts = n_points(curve, int(cfg.n_masks), cfg.fractions)
    for p in pos_list:
        ok = np.flatnonzero(valid[p])
        if ok.size == 0:
            continue
        m = curve_masks(curve, heat[p, ok], levels[p, ok], n_levels[p, ok], int(cfg.n_masks),
                        cfg.fractions)  # [m, n, H, W]
        for j, mi in enumerate(ok):
            for i in range(n_pts):
                for d in range(n_draws):
                    rows["pos"].append(p)
                    rows["method"].append(mi)
                    rows["mask"].append(i + 1)
                    rows["draw"].append(d)
                    masks_all.append(m[j, i])
                    ids.append([stable_int(int(ev["index"][p])), stable_int(str(methods[mi])),
                                stable_int(f"{curve}:{i + 1}"), d])
    out = {k: np.asarray(v, np.int32 if k == "pos" else np.int16) for k, v in rows.items()}
    if not masks_all:
        out["image"] = np.zeros((0,) + ev["image"].shape[1:], np.uint8)
        return out
    remove = np.stack(masks_all)  # [R, H, W]
    images = ev["image"][out["pos"]].astype(np.float32) / 255.0  # [R, H, W, 3]
    keys = _row_keys(fold(key, name), np.asarray(ids, np.int64))
    occluded = occlusion.apply(name, images, remove, key=keys, **opts)
    out["image"] = occlusion.to_uint8(occluded)
    return out


def run(ctx) -> dict:
    t0 = time.time()
    cfg = ctx.cfg
    ev, hm = _read_inputs(ctx.input_dir("explain"))
    methods = [str(m) for m in hm["methods"]]
    heat = hm["heatmaps"].astype(np.float32)  # [N, M, H, W]
    n, m_count, h, w = heat.shape
    if "levels" in hm:
        levels = hm["levels"].astype(np.int8)
        n_levels = (hm["n_levels"].astype(np.int32).reshape(n, m_count) if "n_levels" in hm
                    else levels.reshape(n, m_count, -1).max(-1).astype(np.int32))
    else:
        lv_flat, nl_flat, _ = lv.importance_levels_info(heat.reshape(n * m_count, h, w), int(cfg.k))
        levels, n_levels = lv_flat.reshape(heat.shape), nl_flat.reshape(n, m_count)
    valid = n_levels >= 2
    if "valid" in hm:
        valid &= hm["valid"].astype(bool).reshape(n, m_count)

    strategies = [str(s) for s in cfg.strategies]
    missing = [s for s in strategies if s not in occlusion.STRATEGIES]
    if missing:
        raise ValueError(f"occlude.strategies: {missing} not available; registry has {occlusion.STRATEGIES}")
    curves = [str(c) for c in cfg.curves]
    for c in curves:
        if c not in CURVES:
            raise ValueError(f"occlude.curves: unknown curve {c!r}; expected some of {CURVES}")
    fixed_strats = [s for s in (str(x) for x in cfg.fixed_strategies) if s in strategies] \
        if len(cfg.fixed_strategies) else strategies
    fractions = [float(q) for q in cfg.fractions]
    per = max(1, int(cfg.images_per_chunk))
    chunks = [list(range(s, min(s + per, n))) for s in range(0, n, per)]

    # Mask areas, for the score stage and the report.
    areas = {}
    for curve in curves:
        a = np.zeros((n, m_count, n_points(curve, int(cfg.n_masks), fractions)), np.float32)
        for p in range(n):
            a[p] = curve_masks(curve, heat[p], levels[p], n_levels[p], int(cfg.n_masks),
                               fractions).mean(axis=(-2, -1))
        areas[f"areas_{curve}"] = a
    if ctx.process_index == 0:
        ibo_io.write_npz(ctx.dir / "masks.npz", dict(methods=np.asarray(methods), n_levels=n_levels,
                                                     valid=valid, fractions=np.asarray(fractions, np.float32), **areas))

    blocks, seconds, rows_done = [], {}, 0
    draws = {s: (int(cfg.n_draws) if s in occlusion.RANDOM else 1) for s in strategies}
    work = [(s, c) for s in strategies for c in curves if c == "morf" or s in fixed_strats]
    options: dict[str, dict] = {}  # built on first use (loads the DDPM once, only if needed)
    for strategy, curve in work:
        t_s = time.time()
        for ci, pos_list in enumerate(ctx.progress(chunks, desc=f"occlude {strategy}/{curve}", unit="chunk")):
            name = f"c{ci:04d}"
            fname = f"{strategy}__{curve}__{name}.npz"
            blocks.append({"strategy": strategy, "curve": curve, "name": name, "file": f"chunks/{fname}"})
            if ci % ctx.process_count != ctx.process_index or ctx.chunk_done(fname):
                continue
            if strategy not in options:
                options[strategy] = _options(strategy, cfg, ctx)
            out = _occlude_chunk(strategy, options[strategy], ev, methods, heat, levels, n_levels, valid, pos_list,
                                 curve, cfg, draws[strategy], ctx.key)
            ibo_io.write_npz(ctx.chunk_path(fname), out)
            rows_done += len(out["pos"])
        seconds[f"{strategy}/{curve}"] = round(time.time() - t_s, 2)
        ctx.scalar(f"seconds/{strategy}/{curve}", seconds[f"{strategy}/{curve}"], 0)

    layout = {"strategies": strategies, "curves": curves, "n_masks": int(cfg.n_masks),
              "fractions": {"fixed": fractions}, "draws": draws, "methods": methods,
              "image_size": [h, w], "blocks": blocks, "fixed_strategies": fixed_strats}
    if ctx.process_index == 0:
        ibo_io.write_json(ctx.dir / "layout.json", layout)
        if int(cfg.grid_patches) > 0 and "morf" in curves:
            grid_figure(ctx.dir, ev["image"], methods, valid, n_patches=int(cfg.grid_patches))
    return {"images": n, "methods": m_count, "valid_pairs": int(valid.sum()),
            "excluded": lv.exclusion_counts(n_levels), "rows_written": rows_done,
            "blocks": len(blocks), "seconds_per_strategy": seconds,
            "seconds": round(time.time() - t0, 2)}


def grid_figure(stage_dir: Path, images: np.ndarray, methods: list[str], valid: np.ndarray, *,
                n_patches: int = 2, method: int | None = None) -> Path | None:
    """grid.png: for a few patches, one row per strategy: the original, then M1..Mn occluded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = occluded_layout(stage_dir)
    mi = int(np.argmax(valid.sum(0))) if method is None else method  # the method valid most often
    first = {int(p) for b in load_occluded(stage_dir, curve="morf", name="c0000") for p in b["pos"]}
    patches = [int(p) for p in np.flatnonzero(valid[:, mi]) if int(p) in first][:n_patches]
    if not patches:
        return None
    strategies, n_masks = layout["strategies"], int(layout["n_masks"])
    found: dict[tuple[str, int, int], np.ndarray] = {}
    for block in load_occluded(stage_dir, curve="morf", name="c0000"):  # written by process 0
        sel = np.isin(block["pos"], patches) & (block["method"] == mi) & (block["draw"] == 0)
        for r in np.flatnonzero(sel):
            found[(block["strategy"], int(block["pos"][r]), int(block["mask"][r]))] = block["image"][r]
    rows = [(p, s) for p in patches for s in strategies]
    fig, axes = plt.subplots(len(rows), n_masks + 1, figsize=(1.6 * (n_masks + 1), 1.6 * len(rows)),
                             squeeze=False)
    for r, (p, s) in enumerate(rows):
        axes[r, 0].imshow(images[p])
        axes[r, 0].set_ylabel(f"{s}\npatch {p}", fontsize=7)
        for i in range(1, n_masks + 1):
            img = found.get((s, p, i))
            if img is not None:
                axes[r, i].imshow(img)
            if r == 0:
                axes[r, i].set_title(f"M{i}", fontsize=8)
        axes[0, 0].set_title("original", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"occlusion strategies x progressive masks ({methods[mi]} heatmaps)", fontsize=9)
    fig.tight_layout()
    out = Path(stage_dir) / "grid.png"
    ibo_io.save_figure(fig, out, dpi=80)
    return out


def occluded_layout(stage_dir: str | Path) -> dict:
    """The occlude stage's layout.json (strategies, curves, n_masks, fractions, draws, blocks)."""
    path = Path(stage_dir) / "layout.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: has the occlude stage finished?")
    return ibo_io.read_json(path)


def load_occluded(stage_dir: str | Path, *, strategy: str | None = None,
                  curve: str | None = None, name: str | None = None) -> Iterator[dict]:
    """Yields the occluded blocks, one per chunk file, in layout order.

    Each block: strategy, curve, name (unique within a strategy and curve), image uint8
    [R, H, W, 3], pos int32 [R] (eval-set position), method int16 [R] (index into the layout's
    `methods`), mask int16 [R] (1..n), draw int16 [R]. Filters: strategy, curve, block name.
    """
    stage_dir = Path(stage_dir)
    layout = occluded_layout(stage_dir)
    for b in layout["blocks"]:
        if any(want is not None and b[field] != want
               for field, want in (("strategy", strategy), ("curve", curve), ("name", name))):
            continue
        path = stage_dir / b["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: occluded block listed in layout.json is missing")
        arrays = ibo_io.read_npz(path)
        yield {"strategy": b["strategy"], "curve": b["curve"], "name": b["name"], **arrays}
