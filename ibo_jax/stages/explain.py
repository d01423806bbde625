"""Stage `explain`: the evaluation set, heatmaps per method, importance levels, a figure.

Inputs: `data` (test split), `train_classifier` (the trained model); optionally `heatmaps_npz`,
maps computed elsewhere.
Outputs (explain/, written through `ibo_jax.artifacts`):
  eval_set.npz    index int64 [N], image uint8 [N,H,W,3], label int32 [N], tumor_mask bool [N,H,W];
                  twin uint8 [N,H,W,3] (the patches without their tumor: synthetic data only,
                  `artifacts.twins_of`) or twin_unavailable str (why not)
  heatmaps.npz    methods str [M] (computed methods, then external maps, then controls),
                  controls str [C], external str [E] (the maps read from `heatmaps_npz`),
                  heatmaps float16 [N,M,H,W] in [0,1], levels int8 [N,M,H,W] (1 = most important,
                  0 = excluded), n_levels int8 [N,M], k, valid bool [N,M] (CAM map not degenerate
                  and at least 2 levels), cam_valid bool [N,M]; with derived controls also
                  smooth_sigma_px (float64) and shuffle_shares float64 [S]
  heatmaps.png    a few patches: the image (GT contour), then one overlay per method
  chunks/         per-batch heatmaps (resume after a kill; hosts split the batches)

The evaluation set is `n_images` random tumor patches (label `label`) of the `split` split, drawn
with the stage key, sorted by patch index. Methods (`methods`) are any of `ibo_jax.attribution.METHODS` (the CAM
methods and the gradient / attention attributions) that support the classifier's family (a ViT
or a CNN: `attribution.supports`); an unsupported pair is a one-line error.

Heatmaps computed elsewhere (`heatmaps_npz`, a path): an .npz with `index` int [N'] (patch indices
of the evaluation set: run the stages up to `explain` with `methods = ()` and read
explain/eval_set.npz's `index` to get them), `methods` str [M'] (names not used by a registered
method or a control) and `heatmaps` float [N', M', h, w]. Every evaluation patch must be among the
N' rows (extra rows are ignored); the maps are resized bilinearly (`jax.image.resize`) to the
image size when h, w differ (`external.resized` in the summary says so), then min-max normalized
per map to [0, 1] (importance levels and top-q masks are invariant to it); a constant or
non-finite map is invalid, as a degenerate CAM map is. They are then scored exactly like the
computed maps. The trust stage's model-randomization check cannot cover them (they cannot be
recomputed on a randomized model): `external.randomization` gives the reason.

Levels are computed from the float16 heatmaps that
are stored, so any later recomputation from the file gives the same masks. Controls: 'random' is
a smooth random map (uniform noise on a coarse grid, bilinear upsampling, per-image key from the
patch index); 'oracle' is the ground-truth mask, Gaussian-smoothed. Derived controls
(`derived_controls`, `cam.controls.derive`) come last: per CAM method `<method>_smooth` and
`<method>_shuffle_<percent>`, made from the stored float16 CAM maps, with the CAM map's cam_valid.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ibo_jax import artifacts, attribution, cam, parallel, rng
from ibo_jax import io as ibo_io
from ibo_jax.cam import controls as control_maps


def default_config() -> ml_collections.ConfigDict:
    """Demo-sized: 16 patches, all seven methods, both controls."""
    c = ml_collections.ConfigDict()
    c.n_images = 16          # the study used 100
    c.split = "test"
    c.label = 1              # tumor patches
    c.methods = cam.METHODS   # any of ibo_jax.attribution.METHODS the classifier supports
    c.heatmaps_npz = ""      # heatmaps computed elsewhere (index, methods, heatmaps): see above
    # controls of known quality (evaluation.controls), () for none: a random map, the annotation, the
    # annotation degraded on nested random blobs (the trust stage's known order), the shifted oracle
    c.controls = ("random", "oracle", "graded", "oracle_shifted")
    c.batch_size = 16        # images per jitted call (one compile per method)
    # keyword arguments of each method (cam.compute / make_cam_fn); a 'dtype' may be a name:
    # scorecam.batch_size = masked forwards per chunk, ablationcam.batch_size = ablated head
    # evaluations per chunk, scorecam.dtype = 'bfloat16' for bf16 masked forwards (GPU)
    c.method_options = ml_collections.ConfigDict({"scorecam": {"batch_size": 256},
                                                  "ablationcam": {"batch_size": 1024}})
    c.k = 5                  # importance levels
    c.random_grid = 8        # 'random' control: noise grid size before upsampling
    c.oracle_sigma = 0.02    # 'oracle' control: Gaussian sigma as a fraction of the image size
    c.graded_levels = control_maps.GRADED_LEVELS  # 'graded': shares a of the oracle made random
    c.blob_grid = 6          # 'graded': size of the blobs' noise grid
    # controls made from each CAM method's own map, () for none: 'smooth' (<method>_smooth, the map
    # Gaussian-smoothed: the trust stage's blur-bias check) and 'shuffle' (<method>_shuffle_<percent>,
    # a share of its pixels' values permuted: the shuffle check); occluded on the curves of
    # occlude.control_curves (the fixed-fraction curve by default)
    c.derived_controls = ()
    c.smooth_sigma = 0.05    # 'smooth': Gaussian sigma as a fraction of the image size
    c.shuffle_shares = control_maps.SHUFFLE_SHARES  # 'shuffle': shares s of the pixels permuted
    c.figure_patches = 4
    return c


def method_options(method: str, cfg) -> dict:
    """`explain.method_options.<method>` as keyword arguments (dtype names become dtypes)."""
    return cam.resolve_options(cfg.method_options.get(method, {}))


RANDOMIZATION_UNAVAILABLE = ("maps read from explain.heatmaps_npz were computed outside ibo_jax: they cannot be "
                             "recomputed on the randomized models of the cascade")


def check_methods(methods, model) -> None:
    """Each name is a registered method (`attribution.METHODS`) that supports `model`'s family."""
    for m in methods:
        if m not in attribution.METHODS:
            raise ValueError(f"explain.methods: unknown method {m!r}; expected some of {attribution.METHODS}")
    bad = [m for m in methods if not attribution.supports(m, model)]
    if bad:
        ok = [m for m in attribution.METHODS if attribution.supports(m, model)]
        raise ValueError(f"explain.methods: {bad} do not support this {attribution.family(model)} classifier "
                         f"({type(model).__name__}); methods that do: {ok}")


def read_external(path: str, index: np.ndarray, size: tuple[int, int], reserved) -> dict:
    """Heatmaps computed elsewhere (`explain.heatmaps_npz`) for the evaluation patches `index`:
    {methods [E], heatmaps float32 [N, E, H, W] in [0, 1], valid bool [N, E], resized} (see the
    module docstring). Every problem is one line naming the file and the array."""
    field = f"explain.heatmaps_npz {path}"
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{field}: not found (expected an .npz with index, methods, heatmaps)")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise ValueError(f"{field}: not a readable .npz ({e})") from e
    missing = [k for k in ("index", "methods", "heatmaps") if k not in arrays]
    if missing:
        raise ValueError(f"{field}: missing array(s) {missing}; expected index int [N], methods str [M], "
                         f"heatmaps float [N, M, H, W]")
    idx, names, heat = arrays["index"], arrays["methods"], arrays["heatmaps"]
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"{field}: index is {idx.dtype} {list(idx.shape)}, expected int [N]")
    if names.ndim != 1 or names.dtype.kind != "U" or not len(names):
        raise ValueError(f"{field}: methods is {names.dtype} {list(names.shape)}, expected str [M], M >= 1")
    if heat.ndim != 4 or heat.dtype.kind != "f" or heat.shape[:2] != (len(idx), len(names)):
        raise ValueError(f"{field}: heatmaps is {heat.dtype} {list(heat.shape)}, expected float "
                         f"[N={len(idx)}, M={len(names)}, H, W]")
    names = [str(m) for m in names]
    clash = sorted(set(names) & set(reserved))
    if clash or len(set(names)) != len(names) or "" in names:
        raise ValueError(f"{field}: methods must be distinct non-empty names not used by a registered method or "
                         f"a control (rename e.g. 'gradcam' to 'ext_gradcam'); got {names}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"{field}: index has repeated patch indices")
    row = {int(v): i for i, v in enumerate(idx)}
    absent = [int(v) for v in index if int(v) not in row]
    if absent:
        raise ValueError(f"{field}: {len(absent)} of the {len(index)} evaluation patches are missing (first: "
                         f"{absent[:5]}); its index must cover explain/eval_set.npz's index (run the stages up to "
                         f"explain with explain.methods = () to get it)")
    heat = heat[[row[int(v)] for v in index]].astype(np.float32)  # [N, E, h, w], eval-set order
    resized = None
    if heat.shape[2:] != tuple(size):
        resized = {"from": list(heat.shape[2:]), "to": list(size), "method": "bilinear (jax.image.resize)"}
        heat = np.asarray(jax.image.resize(heat, heat.shape[:2] + tuple(size), "bilinear"))
    finite = np.isfinite(heat).all((2, 3))
    safe = np.where(np.isfinite(heat), heat, 0.0)
    lo, hi = safe.min((2, 3), keepdims=True), safe.max((2, 3), keepdims=True)
    valid = finite & (hi > lo)[..., 0, 0]
    heat = np.where(valid[..., None, None], (safe - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    return {"methods": names, "heatmaps": heat.astype(np.float32), "valid": valid, "resized": resized}


def choose_eval_set(data_dir: Path, cfg, key: jax.Array) -> dict[str, np.ndarray]:
    """n_images random patches of label `cfg.label` from `cfg.split`, sorted by index."""
    from ibo_jax.data.patches import read_split

    split = read_split(data_dir, cfg.split, label=int(cfg.label))
    n_all = len(split["label"])
    n = int(cfg.n_images)
    if n < 1:
        raise ValueError(f"explain.n_images: expected >= 1, got {n}")
    if n_all < n:
        raise ValueError(
            f"explain.n_images: {n} requested but the {cfg.split!r} split has only {n_all} patches "
            f"with label {cfg.label} in {data_dir}"
        )
    pick = np.asarray(jax.random.choice(rng.fold(key, "eval_set"), n_all, (n,), replace=False))
    pick = pick[np.argsort(split["index"][pick], kind="stable")]
    return {
        "index": np.asarray(split["index"][pick], np.int64),
        "image": np.asarray(split["image"][pick], np.uint8),
        "label": np.asarray(split["label"][pick], np.int32),
        "tumor_mask": np.asarray(split["tumor_mask"][pick], bool),
    }


def _compute_chunk(fns: dict, state, images: np.ndarray, batch: int, mesh) -> tuple[np.ndarray, np.ndarray, dict]:
    """All methods on one batch (padded to `batch`) -> heat [n, M, H, W], valid [n, M], seconds."""
    n = images.shape[0]
    x = images.astype(np.float32) / 255.0
    x, _ = parallel.pad_batch(x, batch)
    if jax.process_count() == 1 and mesh is not None and mesh.devices.size > 1:
        x, _ = parallel.pad_batch(x, parallel.local_batch_multiple(mesh))
        x = parallel.shard_batch(x, mesh)
    heats, valids, seconds = [], [], {}
    for name, fn in fns.items():
        t = time.time()
        h, v = fn(state, x)
        heats.append(parallel.to_host(h)[:n])
        valids.append(parallel.to_host(v)[:n])
        seconds[name] = time.time() - t
    return np.stack(heats, 1), np.stack(valids, 1), seconds


def heatmap_figure(path: Path, ev: dict, methods: list[str], heat: np.ndarray, n_patches: int) -> None:
    plt = ibo_io.pyplot()
    n = min(n_patches, len(ev["image"]))
    cols = 1 + len(methods)
    fig, axes = plt.subplots(n, cols, figsize=(1.6 * cols, 1.6 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(ev["image"][i])
        if ev["tumor_mask"][i].any():
            axes[i, 0].contour(ev["tumor_mask"][i], levels=[0.5], colors="lime", linewidths=0.8)
        for j, m in enumerate(methods):
            axes[i, j + 1].imshow(ev["image"][i])
            axes[i, j + 1].imshow(heat[i, j].astype(np.float32), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[i, j + 1].set_title(m, fontsize=8)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    ibo_io.save_figure(fig, path)


def run(ctx) -> dict:
    from flax import nnx

    from ibo_jax.evaluation import exclusion_counts, importance_levels_info
    from ibo_jax.models import loaders

    t0 = time.time()
    cfg = ctx.cfg
    methods = [str(m) for m in cfg.methods]
    controls = [str(c) for c in cfg.controls]
    known = attribution.METHODS
    for m in methods:
        if m not in known:
            raise ValueError(f"explain.methods: unknown method {m!r}; expected some of {known}")
    control_maps.expand(controls)  # unknown names: an error naming the field
    derived = [str(d) for d in cfg.get("derived_controls", ())]
    shares = tuple(float(x) for x in cfg.get("shuffle_shares", control_maps.SHUFFLE_SHARES))
    control_maps.check_derived(derived, shares)

    ev = choose_eval_set(ctx.input_dir("data"), cfg, ctx.key)
    n, H, W, _ = ev["image"].shape
    twins, why = artifacts.twins_of(ctx.input_dir("data"), ev["index"], ev["image"])
    if twins is not None:
        ev["twin"] = twins
    else:
        ev["twin_unavailable"] = np.asarray(why)
    external = None
    if str(cfg.get("heatmaps_npz", "") or ""):  # before the model: a bad file fails fast
        reserved = {*known, *control_maps.expand(controls), *methods}
        external = read_external(str(cfg.heatmaps_npz), ev["index"], (H, W), reserved)
    model = loaders.load_classifier(ctx.input_dir("train_classifier"))
    check_methods(methods, model)
    graphdef, state = nnx.split(model)
    if ctx.process_count == 1 and ctx.mesh is not None and ctx.mesh.devices.size > 1:
        state = parallel.replicate(state, ctx.mesh)
    fns = {m: attribution.make_fn(m, graphdef, target_class=ctx.tumor_class, **method_options(m, cfg))
           for m in methods}

    batch = max(1, int(cfg.batch_size))
    starts = list(range(0, n, batch))
    mine = [s for i, s in enumerate(starts) if i % ctx.process_count == ctx.process_index] if methods else []
    seconds = dict.fromkeys(methods, 0.0)
    for s in ctx.progress(mine, desc="explain", unit="batch"):
        name = f"heat_{s:06d}.npz"
        if ctx.chunk_done(name):
            continue
        heat, valid, sec = _compute_chunk(fns, state, ev["image"][s : s + batch], batch, ctx.mesh)
        ibo_io.write_npz(ctx.chunk_path(name), {"heat": heat.astype(np.float16), "valid": valid})
        for m in methods:
            seconds[m] += sec[m]
    if ctx.process_count > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("explain-chunks")
    if ctx.process_index != 0:
        return {}

    parts = [ibo_io.read_npz(ctx.chunk_path(f"heat_{s:06d}.npz")) for s in starts] if methods else []
    heat = np.concatenate([p["heat"] for p in parts]) if methods else np.zeros((n, 0, H, W), np.float16)
    cam_valid = np.concatenate([p["valid"] for p in parts]) if methods else np.zeros((n, 0), bool)
    external_names = external["methods"] if external is not None else []
    if external is not None:  # scored like the computed maps: ranked methods, before the controls
        heat = np.concatenate([heat, external["heatmaps"].astype(np.float16)], axis=1)
        cam_valid = np.concatenate([cam_valid, external["valid"]], axis=1)
        methods = methods + external_names
    controls, extra = control_maps.make(
        controls, key=ctx.key, index=ev["index"], tumor_mask=ev["tumor_mask"], random_grid=int(cfg.random_grid),
        oracle_sigma=float(cfg.oracle_sigma), blob_grid=int(cfg.blob_grid),
        levels=tuple(float(a) for a in cfg.graded_levels))
    smooth_sigma = float(cfg.get("smooth_sigma", 0.05))
    sigma_px = smooth_sigma * max(H, W)
    d_names, d_maps, parent = control_maps.derive(  # from the stored float16 CAM maps
        derived, heat[:, : len(methods)].astype(np.float32), methods, key=ctx.key, index=ev["index"],
        sigma_px=sigma_px, shares=shares)
    heat = np.concatenate([heat, extra.astype(np.float16), d_maps.astype(np.float16)], axis=1)
    cam_valid = np.concatenate([cam_valid, np.ones((n, len(controls)), bool), cam_valid[:, parent]], axis=1)
    figure_names = methods + controls + [d for d in d_names if control_maps.derived_of(d, methods[:1])]
    controls = controls + d_names
    names = methods + controls
    M = len(names)

    flat = heat.reshape(n * M, H, W).astype(np.float32)  # levels from the stored float16 values
    levels, n_levels, lv_valid = importance_levels_info(flat, int(cfg.k))
    levels = levels.reshape(n, M, H, W)
    n_levels = n_levels.reshape(n, M)
    valid = cam_valid & lv_valid.reshape(n, M)

    artifacts.write_eval_set(ctx.dir, ev)
    derived_info = {}
    if "smooth" in derived:
        derived_info["smooth_sigma_px"] = np.float64(sigma_px)
    if "shuffle" in derived:
        derived_info["shuffle_shares"] = np.asarray(shares, np.float64)
    artifacts.write_heatmaps(ctx.dir, {
        "methods": np.asarray(names, dtype=str), "controls": np.asarray(controls, dtype=str),
        "heatmaps": heat, "levels": levels.astype(np.int8), "n_levels": n_levels.astype(np.int8),
        "k": np.int32(cfg.k), "valid": valid, "cam_valid": cam_valid, **derived_info,
        "external": np.asarray(external_names, dtype=str),
    })
    shown = [names.index(m) for m in figure_names]  # derived controls: the first method's only
    heatmap_figure(artifacts.figure_path("explain", ctx.dir), ev, figure_names, heat[:, shown], int(cfg.figure_patches))
    per_method = {}
    for j, m in enumerate(names):
        per_method[m] = {
            "n_valid": int(valid[:, j].sum()),
            "n_degenerate_cam": int((~cam_valid[:, j]).sum()),
            **{f"excluded_{k}": v for k, v in exclusion_counts(n_levels[:, j]).items()},
        }
        if m in seconds and mine:
            per_method[m]["ms_per_image"] = 1000.0 * seconds[m] / max(1, sum(min(batch, n - s) for s in mine))
    out_derived = {}
    if derived:
        out_derived = {"derived_controls": {"kinds": derived, "names": d_names, **(
            {"smooth_sigma": smooth_sigma, "smooth_sigma_px": sigma_px} if "smooth" in derived else {}),
            **({"shuffle_shares": list(shares)} if "shuffle" in derived else {})}}
    if external is not None:
        out_derived["external"] = {"path": str(cfg.heatmaps_npz), "methods": external_names,
                                   "resized": external["resized"], "n_valid": external["valid"].sum(0).tolist(),
                                   "randomization": {"unavailable": RANDOMIZATION_UNAVAILABLE}}
    return {"n_images": n, "image_size": [H, W], "methods": names, "controls": controls, **out_derived,
            "twins": "available" if twins is not None else why,
            "per_method": per_method, "seconds": time.time() - t0}
