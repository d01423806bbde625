"""Stage `occlude`: every occlusion strategy applied to every deletion mask of every heatmap.

Inputs: `explain/eval_set.npz` (index, image uint8 [N,H,W,3], label, tumor_mask) and
`explain/heatmaps.npz` (methods [M], heatmaps float16 [N,M,H,W], levels int8 [N,M,H,W],
n_levels, valid bool [N,M]); for `ibo`, the EMA DDPM of `train_ddpm`.

Curves (config `curves`): 'morf' = the progressive masks M1..Mn of the importance levels
(Mi = levels 1..min(i, L-1)); 'fixed' = the top q of pixels by heatmap value for each q of
config `fractions` (the same grid for every method); 'lerf' = least relevant levels first;
'insertion' = n+1 points: everything removed, then M1..Mn put back (the complement of Mi removed).
Only (image, method) pairs whose heatmap is valid (L >= 2) are occluded. Controls of a kind that
config `control_curves` lists (kind -> curves; `cam.controls.kind_of`) are occluded on those curves
only (by default the controls derived from each method's map, <method>_smooth and
<method>_shuffle_<percent>, on the fixed-fraction curve only: the MoRF curve's cost grows with every
map); layout.json's `control_curves` names each restricted control with its curves, and a score
table has no points (NaN AUCs) for a control on a curve it did not run on.

On-disk layout (occlude/): `layout.json` and `chunks/` as `ibo_jax.artifacts` writes and reads them;
`masks.npz`, the mask geometry of every curve (`ibo_jax.evaluation.geometry`: pixel counts,
valid pairs, GT IoU), which the score stage reads instead of recomputing it; `grid.png`,
strategies x masks for a few patches. Curves and their masks come from
`ibo_jax.evaluation.curves`; options of a strategy come from `strategy_options.<name>` (and
`ibo` for the RePaint strategy: its sampler setting is `ibo.setting`, a `repaint.Setting` in the
grid form of `repaint_sweep.grid`), passed to `occlusion.apply` as keyword arguments.
Randomness: row (image, method, curve, mask, draw) of a strategy draws from
fold(ctx.key, strategy, image index, method, '<curve>:<mask>', draw): independent of batching,
chunking, host count and resume. Rows of one curve with the same patch, draw and removed pixels
(e.g. the oracle and graded_0, or a map's last MoRF masks when it has few levels) are computed
once, with the first such row's key, and share the result (`occlusion.unique_rows`).
Chunk c of a curve is written by process c % process_count.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from ibo_jax import artifacts, occlusion, repaint
from ibo_jax import io as ibo_io
from ibo_jax.cam import controls as control_maps
from ibo_jax.evaluation import curves as curve_registry
from ibo_jax.evaluation import geometry
from ibo_jax.evaluation import levels as lv
from ibo_jax.io import pyplot
from ibo_jax.rng import fold, row_keys, stable_int

RESIDUAL = artifacts.RESIDUAL


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # 'counterfactual' (synthetic data with twins only; skipped with its reason otherwise)
    c.strategies = ("blackening", "blurring", "mean", "histogram", "nli", "counterfactual", "ibo")
    c.curves = curve_registry.RANKED  # the study's MoRF curve and the fixed-fraction one
    c.n_masks = 4
    c.k = 5  # importance levels, only used if explain/heatmaps.npz carries no levels
    c.fractions = (0.1, 0.25, 0.5)  # q grid of the fixed-fraction curve
    # Strategies for the non-morf curves; empty = all of `strategies`. IBO is left out of the
    # demo's fixed-fraction curve: RePaint costs ~1-4 s per 64 px inpainting on 2 CPU cores.
    c.fixed_strategies = ("blackening", "blurring", "mean", "histogram", "nli", "counterfactual")
    # the curves other than MoRF of a costly strategy on the first N evaluation patches only, e.g.
    # {"ibo": 16} (scores then average over the patches a curve has; 0 / absent: all)
    c.curve_images = ml_collections.ConfigDict({"ibo": 0})
    # controls occluded on some curves only: kind (cam.controls.kind_of: random, oracle, graded,
    # oracle_shifted, smooth, shuffle) -> curves; a kind not listed runs on every curve. The controls
    # derived from each method's own map (explain.derived_controls) run on the fixed-fraction curve.
    c.control_curves = ml_collections.ConfigDict({"smooth": (curve_registry.KNOWN_ANSWER,),
                                                  "shuffle": (curve_registry.KNOWN_ANSWER,)})
    # strategies that occlude the ranked methods only, no control map (a costly strategy whose trust
    # checks need only the ranking, e.g. ('ffidelity',) in the demo); their control rows have no points
    c.ranked_only = ()
    # the controls derived from each method's map (explain.derived_controls) on the first N evaluation
    # patches only: strategy -> N, 'all' for the strategies not named (0 / absent: every patch)
    c.control_images = ml_collections.ConfigDict({})
    c.n_draws = 1  # draws per mask for random strategies (histogram, nli, ibo)
    c.images_per_chunk = 4
    # keyword arguments of each strategy (occlusion.apply); nli solver 'cg' = batched JAX (accelerators)
    c.strategy_options = ml_collections.ConfigDict({
        "blurring": {"sigma_at_224": 10.0}, "nli": {"noise": 0.01, "solver": "scipy"}})
    # setting: the sampler setting as one value, as in repaint_sweep.grid: (sampler, t_T, jump_length,
    # jump_n_sample[, eta]) or (t_T, jump_length, jump_n_sample) for RePaint (repaint.Setting.parse);
    # () = the fields below: sampler 'repaint' (the study's), 'ddim_repaint' or 'ddnm' (repaint.SAMPLERS);
    # (t_T, jump_length, jump_n_sample) = (10, 5, 2): 15 network calls per inpainting (the study: RePaint
    # 250/10/10, 2,410); eta < 0: the sampler's default (RePaint: official DDPM steps). With a setting,
    # a field off its default here must agree with it.
    c.ibo = ml_collections.ConfigDict(
        dict(setting=(), sampler="repaint", t_T=10, jump_length=5, jump_n_sample=2, batch_size=32, eta=-1.0,
             bf16=False))
    c.grid_patches = 2
    # also remove the whole annotated region once per image and strategy (residual evidence: what
    # p(tumor) is left against the counterfactual twin's)
    c.residual = True
    return c


def ibo_setting(c) -> repaint.Setting:
    """The sampler setting of the `ibo` section: `setting` if given (the fields beside it must be at
    their defaults or agree with it), else the fields sampler, t_T, jump_length, jump_n_sample, eta."""
    fields = {"sampler": str(c.sampler), "t_T": int(c.t_T), "jump_length": int(c.jump_length),
              "jump_n_sample": int(c.jump_n_sample), "eta": float(c.eta)}
    if not len(c.get("setting", ())):
        return repaint.Setting.from_mapping(fields, "occlude.ibo")
    s = repaint.Setting.parse(c.setting, "occlude.ibo.setting")
    defaults = default_config().ibo
    wanted = {**fields, "eta": None if fields["eta"] < 0 else fields["eta"]}
    conflicts = [f"occlude.ibo.{k}={fields[k]!r}" for k, v in wanted.items()
                 if fields[k] != defaults[k] and v != getattr(s, k)]
    if conflicts:
        raise ValueError(f"occlude.ibo.setting = {s.name} conflicts with {', '.join(conflicts)}: give one")
    return s


def ibo_options(c, train_ddpm_dir) -> dict:
    """occlusion.apply('ibo', ...) keywords from the `ibo` section (loads the EMA DDPM)."""
    from ibo_jax.models import loaders

    return {
        # bf16 through the module's own dtype (bf16 convolutions and attention): casting only
        # the parameters leaves the UNet computing in fp32 (measured on an H200).
        "eps_model": loaders.load_eps_model(train_ddpm_dir, dtype=jnp.bfloat16 if c.bf16 else None),
        "setting": ibo_setting(c), "batch_size": int(c.batch_size),
        # the chunks are split over processes: each runs its own on its local devices
        "mesh": None, "progress": False,
    }


def ffidelity_options(ctx) -> dict:
    """occlusion.apply('ffidelity', ...) keywords from the finetune_ffidelity stage: the fine-tuned
    classifier, the fill it was fine-tuned with, the tumor class."""
    from ibo_jax.occlusion import ffidelity

    stage = ffidelity.STAGE
    if stage not in ctx.inputs:
        raise ValueError(f"occlude.strategies has 'ffidelity', which predicts with the fine-tuned classifier of "
                         f"stage {stage!r}: the config has no {stage!r} section (add config.{stage} = "
                         f"pipeline.STAGES['{stage}'].load().default_config())")
    model, fill = ffidelity.load_finetuned(ctx.input_dir(stage))
    tuned_beta = float(artifacts.read_json(ffidelity.FINETUNE_METRICS, ctx.input_dir(stage))["beta"])
    beta = ctx.cfg.strategy_options.get("ffidelity", {}).get("beta", tuned_beta)
    if beta is not None and float(beta) != tuned_beta:
        raise ValueError(f"occlude.strategy_options.ffidelity.beta = {beta} differs from {stage}.beta = {tuned_beta}: "
                         f"the cap is the share the model was fine-tuned on (leave it out to use that)")
    return {"model": model, "fill": fill, "tumor_class": ctx.tumor_class, "beta": tuned_beta}


def strategy_options(name: str, cfg, ctx) -> dict:
    opts = dict(ibo_io.plain(cfg.strategy_options.get(name, {})))
    if name == "ibo":
        opts.update(ibo_options(cfg.ibo, ctx.input_dir("train_ddpm")))
    if name == "ffidelity":  # strategy_options.ffidelity: n_samples, alpha, beta, batch_size
        opts.update(ffidelity_options(ctx))
    if name == "token_drop":  # strategy_options.token_drop: batch_size
        opts.update(token_drop_options(ctx))
    return opts


def token_drop_options(ctx) -> dict:
    """occlusion.apply('token_drop', ...) keywords: the run's classifier (a ViT, else one line) and the
    tumor class. The classifier is the one explain read (its fingerprint is in explain's, so in this
    stage's): workdir/train_classifier."""
    from ibo_jax.models import loaders
    from ibo_jax.occlusion.token_drop import check_vit

    model = loaders.load_classifier(ctx.workdir / "train_classifier")
    try:
        check_vit(model, "the run's classifier")
    except ValueError as e:
        raise ValueError(f"occlude.strategies has 'token_drop': {e}") from e
    return {"model": model, "tumor_class": ctx.tumor_class}


def _residual_rows(ev, pos_list, n_draws):
    """The whole annotated region removed, once per image (and draw): method -1, mask 1."""
    rows = {"pos": [], "method": [], "mask": [], "draw": []}
    masks_all, ids = [], []
    for p in pos_list:
        if not ev["tumor_mask"][p].any():
            continue
        for d in range(n_draws):
            for k, v in zip(rows, (p, -1, 1, d)):
                rows[k].append(v)
            masks_all.append(ev["tumor_mask"][p])
            ids.append([stable_int(int(ev["index"][p])), stable_int("annotation"), stable_int(f"{RESIDUAL}:1"), d])
    return rows, masks_all, ids


def control_curves(cfg, methods, controls, curves) -> dict[str, list[str]]:
    """{control: the curves of `curves` it is occluded on} for the controls whose kind
    `cfg.control_curves` lists (the others, and every ranked method, run on every curve)."""
    spec = {str(k): [str(c) for c in v] for k, v in cfg.get("control_curves", {}).items()}
    kinds = (*control_maps.KNOWN, *control_maps.DERIVED)
    bad = [k for k in spec if k not in kinds]
    if bad:
        raise ValueError(f"occlude.control_curves: unknown control kinds {bad}; expected some of {kinds}")
    for k, v in spec.items():
        unknown = [c for c in v if c not in curve_registry.CURVES]
        if unknown:
            raise ValueError(f"occlude.control_curves.{k}: unknown curves {unknown}; expected some of "
                             f"{tuple(curve_registry.CURVES)}")
    ranked = [m for m in methods if m not in controls]
    out = {}
    for c in controls:
        kind = control_maps.kind_of(c, ranked)
        if kind in spec:
            out[c] = [x for x in curves if x in spec[kind]]
            if not out[c]:
                raise ValueError(f"occlude.control_curves.{kind} = {tuple(spec[kind])}: none of them is in "
                                 f"occlude.curves = {tuple(curves)}, so the {kind!r} controls (e.g. {c!r}) would be "
                                 f"computed and never scored; add a curve or drop them from explain.derived_controls")
    return out


def curve_methods(methods, restricted: dict[str, list[str]], curve: str) -> np.ndarray:
    """bool [M]: the maps occluded on `curve` (every map but the restricted controls not run on it)."""
    return np.array([m not in restricted or curve in restricted[m] for m in methods], bool)


def _occlude_chunk(name, opts, ev, methods, heat, levels, n_levels, valid, pos_list, curve, cfg,
                   n_draws, key, maps=None) -> dict:
    """One chunk of one (strategy, curve); `maps` bool [M] or, per patch position, [N, M]: the maps
    occluded on it (None: all)."""
    if curve == RESIDUAL:
        rows, masks_all, ids = _residual_rows(ev, pos_list, n_draws)
        return _apply(name, opts, ev, rows, masks_all, ids, key)
    rows = {"pos": [], "method": [], "mask": [], "draw": []}
    masks_all, ids = [], []
    n_pts = curve_registry.get(curve).n_points(int(cfg.n_masks), cfg.fractions)
    for p in pos_list:
        ok = np.flatnonzero(valid[p] if maps is None else valid[p] & (maps[p] if maps.ndim == 2 else maps))
        if ok.size == 0:
            continue
        m = geometry.curve_masks(curve, heat[p, ok], levels[p, ok], n_levels[p, ok], int(cfg.n_masks),
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
    return _apply(name, opts, ev, rows, masks_all, ids, key)


def _apply(name, opts, ev, rows, masks_all, ids, key) -> dict:
    """One block: uint8 images, or for a strategy predicted_by 'stored' (it returns {'p', 'logit'}
    [U] for its distinct rows instead of images) the predictions."""
    out = {k: np.asarray(v, np.int32 if k == "pos" else np.int16) for k, v in rows.items()}
    stored = occlusion.predicted_by(name) == "stored"
    if not masks_all:
        if stored:
            out["p"], out["logit"] = np.zeros(0, np.float32), np.zeros(0, np.float32)
        else:
            out["image"] = np.zeros((0,) + ev["image"].shape[1:], np.uint8)
        return out
    remove = np.stack(masks_all)  # [R, H, W]
    first, inverse = occlusion.unique_rows(out["pos"], out["draw"], remove)
    pos = out["pos"][first]
    images = ev["image"][pos].astype(np.float32) / 255.0  # [U, H, W, 3]
    keys = row_keys(fold(key, name), np.asarray(ids, np.int64)[first])
    if name == "counterfactual":  # each row's removed pixels come from its own patch's twin
        opts = {**opts, "twin": ev["twin"][pos]}
    occluded = occlusion.apply(name, images, remove[first], key=keys, **opts)
    if stored:
        for k in ("p", "logit"):
            out[k] = np.asarray(occluded[k], np.float32).reshape(-1)[inverse]
        return out
    out["image"] = occlusion.to_uint8(occluded)[inverse]
    return out


def run(ctx) -> dict:
    t0 = time.time()
    cfg = ctx.cfg
    ev, hm = artifacts.read_explained(ctx.input_dir("explain"), need=("heatmaps",))
    methods = hm["methods"]
    heat = hm["heatmaps"].astype(np.float32)  # [N, M, H, W]
    n, m_count, h, w = heat.shape
    if "levels" in hm:
        levels = hm["levels"].astype(np.int8)
        n_levels = (hm["n_levels"].astype(np.int32).reshape(n, m_count) if "n_levels" in hm
                    else levels.reshape(n, m_count, -1).max(-1).astype(np.int32))
    else:
        lv_flat, nl_flat, _ = lv.importance_levels_info(heat.reshape(n * m_count, h, w), int(cfg.k))
        levels, n_levels = lv_flat.reshape(heat.shape), nl_flat.reshape(n, m_count)
    strategies = [str(s) for s in cfg.strategies]
    skipped = {}
    twins, no_twins = artifacts.twins(ev)
    if "counterfactual" in strategies and twins is None:  # not synthetic data: said, not faked
        skipped["counterfactual"] = no_twins
        strategies.remove("counterfactual")
    missing = [s for s in strategies if s not in occlusion.STRATEGIES]
    if missing:
        raise ValueError(f"occlude.strategies: {missing} not available; registry has {occlusion.STRATEGIES}")
    curves = [str(c) for c in cfg.curves]
    for c in curves:
        if c not in curve_registry.CURVES:
            raise ValueError(f"occlude.curves: unknown curve {c!r}; expected some of {tuple(curve_registry.CURVES)}")
    fixed_strats = [s for s in (str(x) for x in cfg.fixed_strategies) if s in strategies] \
        if len(cfg.fixed_strategies) else strategies
    fractions = [float(q) for q in cfg.fractions]
    per = max(1, int(cfg.images_per_chunk))
    chunks = [list(range(s, min(s + per, n))) for s in range(0, n, per)]

    # Mask geometry of every curve, written once: the score stage and the report read it.
    geo = geometry.compute(heat, levels, n_levels, hm.get("valid"), ev["tumor_mask"], curves=curves,
                           n_masks=int(cfg.n_masks), fractions=fractions)
    valid = geo["valid"]  # usable heatmap (>= 2 levels) with a non-empty M_n: the pairs occluded
    restricted = control_curves(cfg, methods, hm["controls"], curves)
    maps = {c: curve_methods(methods, restricted, c) for c in curves}  # per curve, the maps it occludes
    ranked_only = [str(x) for x in cfg.get("ranked_only", ())]
    unknown = [x for x in ranked_only if x not in occlusion.STRATEGIES]  # (one not run is no error)
    if unknown:
        raise ValueError(f"occlude.ranked_only: {unknown} are no strategies; expected some of {occlusion.STRATEGIES}")
    is_ranked = ~np.isin(np.asarray(methods), np.asarray(list(hm["controls"]) or [""]))
    ranked_names = [m for m, r in zip(methods, is_ranked) if r]
    is_derived = np.array([not r and control_maps.kind_of(m, ranked_names) in control_maps.DERIVED
                           for m, r in zip(methods, is_ranked)], bool)
    control_images = {str(k): int(v or 0) for k, v in cfg.get("control_images", {}).items()}
    bad = [k for k in control_images if k != "all" and k not in occlusion.STRATEGIES]
    if bad:
        raise ValueError(f"occlude.control_images: {bad} are no strategies (or 'all'); expected some of "
                         f"{occlusion.STRATEGIES}")
    if ctx.process_index == 0:
        artifacts.write_geometry(ctx.dir, geo, methods=methods)

    blocks, seconds, rows_done = [], {}, 0
    draws = {s: (int(cfg.n_draws) if s in occlusion.RANDOM else 1) for s in strategies}
    work = [(s, c) for s in strategies for c in curves if c == curve_registry.PRIMARY or s in fixed_strats]
    if cfg.residual:  # every strategy removes the whole annotated region once per image
        work += [(s, RESIDUAL) for s in strategies]
    residual_blocks = []
    options: dict[str, dict] = {}  # built on first use (loads the DDPM once, only if needed)
    for strategy, curve in work:
        t_s = time.time()
        limit = int(cfg.curve_images.get(strategy, 0) or 0) if curve not in (curve_registry.PRIMARY, RESIDUAL) else 0
        todo = [[p for p in ch if p < limit] for ch in chunks] if limit else chunks
        todo = [ch for ch in todo if ch]
        for ci, pos_list in enumerate(ctx.progress(todo, desc=f"occlude {strategy}/{curve}", unit="chunk")):
            name = f"c{ci:04d}"
            file = artifacts.block_file(strategy, curve, name)
            fname = Path(file).name
            (residual_blocks if curve == RESIDUAL else blocks).append(
                {"strategy": strategy, "curve": curve, "name": name, "file": file})
            if ci % ctx.process_count != ctx.process_index or ctx.chunk_done(fname):
                continue
            if strategy not in options:
                options[strategy] = strategy_options(strategy, cfg, ctx)
            use = maps.get(curve)
            if strategy in ranked_only and curve != RESIDUAL:
                use = use & is_ranked
            c_limit = control_images.get(strategy, control_images.get("all", 0))
            if c_limit and use is not None and is_derived.any():  # derived controls on the first patches only
                use = np.repeat(use[None], n, axis=0)
                use[c_limit:, is_derived] = False
            out = _occlude_chunk(strategy, options[strategy], ev, methods, heat, levels, n_levels, valid, pos_list,
                                 curve, cfg, draws[strategy], ctx.key, use)
            ibo_io.write_npz(ctx.chunk_path(fname), out)
            rows_done += len(out["pos"])
        seconds[f"{strategy}/{curve}"] = round(time.time() - t_s, 2)
        ctx.scalar(f"seconds/{strategy}/{curve}", seconds[f"{strategy}/{curve}"], 0)

    layout = {"strategies": strategies, "curves": curves, "n_masks": int(cfg.n_masks),
              "fractions": {c: fractions for c in curves if curve_registry.get(c).uses_fractions}, "draws": draws, "methods": methods,
              "image_size": [h, w], "blocks": blocks, "fixed_strategies": fixed_strats,
              "residual_blocks": residual_blocks, "skipped": skipped,
              "predicted_by": {s: occlusion.predicted_by(s) for s in strategies},
              "curve_images": {k: int(v) for k, v in cfg.curve_images.items() if int(v or 0)},
              "control_curves": restricted, "ranked_only": [x for x in ranked_only if x in strategies],
              "control_images": {k: v for k, v in control_images.items() if v}}
    if ctx.process_index == 0:
        artifacts.write_layout(ctx.dir, layout)
        if int(cfg.grid_patches) > 0 and curve_registry.PRIMARY in curves:
            grid_figure(ctx.dir, ev["image"], methods, valid & maps[curve_registry.PRIMARY][None],
                        n_patches=int(cfg.grid_patches))
    return {"images": n, "methods": m_count, "valid_pairs": int(valid.sum()),
            "excluded": lv.exclusion_counts(n_levels), "rows_written": rows_done,
            "blocks": len(blocks), "seconds_per_strategy": seconds, "skipped": skipped,
            "seconds": round(time.time() - t0, 2)}


def grid_figure(stage_dir: Path, images: np.ndarray, methods: list[str], valid: np.ndarray, *,
                n_patches: int = 2, method: int | None = None) -> Path | None:
    """grid.png: for a few patches, one row per strategy: the original, then M1..Mn occluded."""
    plt = pyplot()
    layout = artifacts.read_layout(stage_dir)
    mi = int(np.argmax(valid.sum(0))) if method is None else method  # the method valid most often
    first = {int(p) for b in artifacts.occluded_blocks(stage_dir, curve=curve_registry.PRIMARY, name="c0000") for p in b["pos"]}
    patches = [int(p) for p in np.flatnonzero(valid[:, mi]) if int(p) in first][:n_patches]
    if not patches:
        return None
    strategies, n_masks = layout["strategies"], int(layout["n_masks"])
    found: dict[tuple[str, int, int], np.ndarray] = {}
    for block in artifacts.occluded_blocks(stage_dir, curve=curve_registry.PRIMARY, name="c0000"):  # written by process 0
        if "image" not in block:  # a strategy that stores predictions, not images
            continue
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
    out = artifacts.figure_path("occlude", stage_dir)
    ibo_io.save_figure(fig, out, dpi=80)
    return out
