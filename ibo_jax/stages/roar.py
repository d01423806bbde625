"""Stage `roar`: ROAR and KAR (Hooker et al. 2019) with the mask-only leakage control (Rong et al.).

For each ranked method (and a smooth random map, the baseline of the score) and each fraction t:
remove the top-t pixels of every training, validation and test patch by the method's map (ROAR;
KAR: keep them and remove the rest), the fill being the per-channel mean of the training patches,
retrain the classifier from scratch with train_classifier's recipe, and record test accuracy and
mean p(tumor) of the test tumor patches. Maps are the trained classifier's, for patches of both
labels, always explaining the tumor logit (`tumor_class`), as the evaluation set's are. The score
of a method is its drop against the random map's (`ibo_jax.evaluation.roar.scores`).

What ROAR measures: how much a freshly trained model can still learn without those pixels, not
what the trained model used. Its ranking is reported beside the deletion strategies' against the
known answer (trust/summary.json: the counterfactual strategy's ranking on the `known_curve`,
'morf' by default), with the pairs where it disagrees; a disagreement is a finding about what
ROAR measures, not a failure of either.

Steps (each piece a chunk under roar/chunks/, so a killed run resumes where it stopped):
  (a) maps of every method for the train / val / test patches (`maps_<method>_<split>_<start>.npz`,
      float16 like the explain stage's, with the seconds they took): computing maps for the whole
      training split is part of ROAR's cost, reported apart (`cost.seconds_maps`);
  (b) baseline: one retraining per seed on the unmodified patches (curve 'baseline');
  (c) one retraining per (mode, method incl. 'random', fraction, seed)
      (`run_<curve>_<method>_t<fraction>_s<seed>.json`), trained in roar/retrain/<run>/ (a kill
      mid-training resumes from its checkpoint there; the folder is deleted once the row is written);
  (d) leakage: per method (and 'random'), a classifier trained on the top-t masks alone
      (`roar.mask_only_images`, labels unchanged) at the middle ranked fraction, first seed (curve 'leakage');
      ROAR's and KAR's masks at one t carry the same information (complements), so one run serves both.
Retraining seed s uses the same initialization, batch order and augmentation keys for every
method and fraction (fold(stage key, 'retrain', s)): the runs differ only in the removal.

Outputs (roar/):
  summary.json  rows, scores (evaluation.roar.scores: per curve, method and fraction the drop
                against random, the ranking, Kendall's tau with the known answer, disagreements,
                confounded methods; leakage per method), leakage (the same, or `skipped` with the
                reason), known_answer (source and ranking),
                beside (every strategy's tau with the known answer on the same methods, roar's
                and kar's among them), fill, recipe, n_patches, cost (seconds for maps / retraining
                / in all, counts), seconds
  roar.csv      the rows: curve, method, fraction, seed, test_accuracy, mean_p_tumor, seconds
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import time
from functools import partial
from pathlib import Path

import jax
import ml_collections
import numpy as np

from ibo_jax import artifacts, cam, parallel, rng
from ibo_jax import io as ibo_io
from ibo_jax.evaluation import roar as R

CSV_COLUMNS = ("curve", "method", "fraction", "seed", "test_accuracy", "mean_p_tumor", "seconds")
SPLITS = ("train", "val", "test")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.methods = cam.METHODS   # every library classifier supports all seven
    c.fractions = (0.1, 0.3, 0.5)  # t: share of each patch's pixels removed (ROAR) or kept (KAR)
    c.modes = ("roar", "kar")
    c.seeds = (0,)            # retraining seeds (initialization, batch order, augmentation)
    c.leakage = True          # the mask-only control at the middle fraction
    c.leakage_margin = R.LEAKAGE_MARGIN  # accuracy above chance that counts as leakage
    c.limit_train = 0         # training patches (the first by index); 0 = train_classifier's own set
    c.epochs = -1             # -1 = train_classifier's recipe (its section's epochs and other fields)
    c.map_batch_size = 32     # images per jitted CAM call
    c.map_chunk = 256         # patches per maps chunk file (the resume granularity of step (a))
    c.method_options = ml_collections.ConfigDict({"scorecam": {"batch_size": 256},
                                                  "ablationcam": {"batch_size": 1024}})
    c.random_grid = 8         # the random map: noise grid size before bilinear upsampling
    c.known_curve = "morf"    # the curve of trust's counterfactual ranking used as the known answer
    return c


def _fraction_name(t: float) -> str:
    return f"{t:.4f}"


def run_name(curve: str, method: str, fraction: float, seed: int) -> str:
    """The chunk file of one retraining."""
    return f"run_{curve}_{method}_t{_fraction_name(fraction)}_s{int(seed)}.json"


def _check(cfg) -> tuple[list[str], list[float], list[str], list[int]]:
    methods = [str(m) for m in cfg.methods]
    for m in methods:
        cam.base.check_method(m)
    if R.RANDOM in methods:
        raise ValueError(f"roar.methods: {R.RANDOM!r} is the baseline map, always run; leave it out")
    fractions = sorted({float(t) for t in cfg.fractions})
    if not fractions or any(not 0.0 <= t <= 1.0 for t in fractions):
        raise ValueError(f"roar.fractions: expected fractions in [0, 1], got {list(cfg.fractions)}")
    modes = [str(m) for m in cfg.modes]
    if not modes or any(m not in R.CURVES for m in modes):
        raise ValueError(f"roar.modes: expected some of {R.CURVES}, got {modes}")
    seeds = [int(s) for s in cfg.seeds]
    if not seeds:
        raise ValueError("roar.seeds: expected at least one retraining seed")
    return methods, fractions, modes, seeds


def train_config(ctx):
    """train_classifier's recipe (its section's TrainConfig fields), epochs replaced by roar.epochs >= 1."""
    from ibo_jax.train import classifier as tc

    section = ctx.config.get("train_classifier", ml_collections.ConfigDict())
    fields = {f.name for f in dataclasses.fields(tc.TrainConfig)}
    tcfg = tc.TrainConfig(**{k: section[k] for k in fields if k in section})
    epochs = int(ctx.cfg.epochs)
    if epochs >= 1:
        tcfg = dataclasses.replace(tcfg, epochs=epochs)
    elif epochs != -1:
        raise ValueError(f"roar.epochs: expected -1 (train_classifier's) or >= 1, got {epochs}")
    if tcfg.epochs < 1:
        raise ValueError("roar: train_classifier.epochs = 0 (a classifier used as is) has no training recipe "
                         "to repeat; set roar.epochs (and the train_classifier section's optimizer fields)")
    return tcfg


def _read_data(ctx) -> dict[str, dict[str, np.ndarray]]:
    from ibo_jax.data.patches import read_split

    data_dir = ctx.input_dir("data")
    limit = int(ctx.cfg.limit_train) or int(ctx.config.get("train_classifier", {}).get("limit_train", 0)) or None
    out = {}
    for split in SPLITS:
        s = read_split(data_dir, split, limit=limit if split == "train" else None)
        out[split] = {k: s[k] for k in ("image", "label", "index")}
        if not len(s["label"]):
            raise ValueError(f"{data_dir}: the {split!r} split is empty; ROAR needs train, val and test patches")
    return out


def _compute_maps(fn, state, images: np.ndarray, batch: int, mesh) -> tuple[np.ndarray, np.ndarray]:
    heats, valids = [], []
    for s in range(0, len(images), batch):
        chunk = images[s:s + batch]
        x, n = parallel.pad_batch(chunk.astype(np.float32) / 255.0, batch)
        if jax.process_count() == 1 and mesh is not None and mesh.devices.size > 1:
            x, _ = parallel.pad_batch(x, parallel.local_batch_multiple(mesh))
            x = parallel.shard_batch(x, mesh)
        h, v = fn(state, x)
        heats.append(parallel.to_host(h)[:n])
        valids.append(parallel.to_host(v)[:n])
    return np.concatenate(heats), np.concatenate(valids)


def map_chunks(n: int, size: int) -> list[int]:
    return list(range(0, n, max(1, int(size))))


def compute_maps(ctx, data: dict, methods: list[str]) -> tuple[dict, dict]:
    """Step (a): every method's maps for every split as chunks (skipped when present). Returns
    ({method: {split: seconds}} summed from the chunks, also those of an earlier, killed run;
    {method: {split: degenerate maps}}, the maps CAM flagged invalid: zeros, their top-t a random pixel order per patch)."""
    from flax import nnx

    from ibo_jax.models import loaders

    cfg = ctx.cfg
    batch = max(1, int(cfg.map_batch_size))
    todo = [(m, split, s) for m in methods for split in SPLITS
            for s in map_chunks(len(data[split]["label"]), int(cfg.map_chunk))]
    missing = [x for x in todo if not ctx.chunk_done(_map_chunk(*x))]
    if missing:
        model = loaders.load_classifier(ctx.input_dir("train_classifier"))
        graphdef, state = nnx.split(model)
        if ctx.mesh is not None and ctx.mesh.devices.size > 1:
            state = parallel.replicate(state, ctx.mesh)
        fns = {}
        for m, split, s in ctx.progress(missing, desc="roar maps", unit="chunk"):
            if m not in fns:
                fns[m] = cam.make_cam_fn(m, graphdef, target_class=ctx.tumor_class,
                                         **cam.resolve_options(cfg.method_options.get(m, {})))
            images = data[split]["image"][s:s + int(cfg.map_chunk)]
            t = time.time()
            heat, valid = _compute_maps(fns[m], state, images, batch, ctx.mesh)
            ctx.chunks.save(_map_chunk(m, split, s), {"heat": heat.astype(np.float16), "valid": valid,
                                                      "seconds": np.float64(time.time() - t)})
    seconds = {m: dict.fromkeys(SPLITS, 0.0) for m in methods}
    degenerate = {m: dict.fromkeys(SPLITS, 0) for m in methods}
    for m, split, s in todo:
        z = ctx.chunks.load(_map_chunk(m, split, s))
        seconds[m][split] += float(z["seconds"])
        degenerate[m][split] += int(np.sum(~z["valid"]))
    return seconds, degenerate


def _map_chunk(method: str, split: str, start: int) -> str:
    return f"maps_{method}_{split}_{start:06d}.npz"


def load_maps(ctx, data: dict, method: str) -> dict[str, np.ndarray]:
    """{split: float32 maps [N, H, W]} of one method (from the float16 chunks)."""
    out = {}
    for split in SPLITS:
        parts = [ctx.chunks.load(_map_chunk(method, split, s))["heat"]
                 for s in map_chunks(len(data[split]["label"]), int(ctx.cfg.map_chunk))]
        out[split] = np.concatenate(parts).astype(np.float32)
    return out


def random_split_maps(ctx, data: dict) -> dict[str, np.ndarray]:
    """The random map of every patch (keyed by split and patch index)."""
    out = {}
    for split in SPLITS:
        img = data[split]["image"]
        out[split] = R.random_maps(rng.fold(ctx.key, "random_maps", split), len(img), img.shape[1], img.shape[2],
                                   grid=int(ctx.cfg.random_grid), ids=data[split]["index"])
    return out


def retrain(ctx, spec, tcfg, images: dict[str, np.ndarray], data: dict, seed: int, workdir: Path) -> dict:
    """One retraining from scratch on `images` {split: [N, H, W, 3]} (labels and indices of `data`),
    in `workdir`: test accuracy and mean p(tumor) of the test tumor patches, seconds."""
    from ibo_jax.models import loaders
    from ibo_jax.train import classifier as tc

    t = time.time()
    x, y, idx = images["train"], data["train"]["label"], data["train"]["index"]
    steps = len(y) // tcfg.batch_size
    if steps < 1:
        raise ValueError(f"roar: {len(y)} training patches, fewer than one batch of {tcfg.batch_size}")
    key = rng.fold(ctx.key, "retrain", int(seed))
    tc.train(spec, tcfg, train_batches=lambda epoch: tc.array_batches(x, y, batch_size=tcfg.batch_size, seed=seed,
                                                                       epoch=epoch, index=idx),
             steps_per_epoch=steps, workdir=workdir, key=key, val=(images["val"], data["val"]["label"]),
             mesh=ctx.mesh)
    model = loaders.load_classifier(workdir)
    probs = tc.predict(model, images["test"], batch_size=tcfg.eval_batch_size, mesh=ctx.mesh)
    labels = data["test"]["label"]
    tumor = labels == 1
    # the retrained model learns the data labels: its tumor logit is label 1's, whatever tumor_class
    # says about the trained classifier (tumor_class != 1 only for a classifier brought as is)
    return {"test_accuracy": float(np.mean(probs.argmax(-1) == labels)),
            "mean_p_tumor": float(np.mean(probs[tumor, 1])) if tumor.any() else None,
            "seconds": time.time() - t}


def _run_or_load(ctx, name: str, fn) -> tuple[dict, bool]:
    if ctx.chunk_done(name):
        return ibo_io.read_json(ctx.chunk_path(name)), False
    work = ctx.dir / "retrain" / name.removesuffix(".json")
    row = fn(work)
    ibo_io.write_json(ctx.chunk_path(name), row)
    shutil.rmtree(work, ignore_errors=True)
    return row, True


def input_key(inputs, config) -> dict[str, str]:
    """What this stage reads from `trust`, by content: the rankings of the methods on its
    `known_curve` (the counterfactual's and every strategy's). The pipeline keys the stage on it
    instead of trust's fingerprint, so trust settings that leave the rankings alone (bootstrap
    sizes, intervals, other sections) keep the retrainings."""
    import hashlib
    import json

    curve = str(config.roar.get("known_curve", "morf"))
    s = artifacts.read_summary(inputs["trust"], required=False) or {}
    entry = ((s.get("counterfactual") or {}).get("curves") or {}).get(curve) or {}
    what = {"curve": curve, "reference": entry.get("reference_ranking"),
            "strategies": {k: v.get("ranking") for k, v in sorted((entry.get("strategies") or {}).items())}}
    return {"trust": hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]}


def known_answer(ctx, curve: str) -> tuple[dict | None, dict]:
    """(the counterfactual's ranking on `curve` from trust/summary.json or None, a description)."""
    s = artifacts.read_summary(ctx.input_dir("trust"), required=False)
    where = f"trust/summary.json counterfactual.curves.{curve}.reference_ranking"
    if s is None:
        return None, {"source": where, "unavailable": "trust/summary.json is missing"}
    cf = s.get("counterfactual", {})
    entry = (cf.get("curves") or {}).get(curve)
    if not entry or not entry.get("reference_ranking"):
        why = cf.get("unavailable") or f"the counterfactual strategy has no ranking on the {curve!r} curve"
        return None, {"source": where, "unavailable": why}
    return dict(entry["reference_ranking"]), {"source": where, "reference": cf.get("reference", "counterfactual"),
                                              "curve": curve, "ranking": dict(entry["reference_ranking"])}


def beside(ctx, curve: str, known: dict | None, scored: dict, methods: list[str]) -> dict:
    """Every deletion strategy's Kendall tau with the known answer on the methods ROAR ranked,
    beside roar's and kar's: the strategies measure the trained model, ROAR a retrained one."""
    if known is None:
        return {"unavailable": "no known-answer ranking"}
    s = artifacts.read_summary(ctx.input_dir("trust"), required=False) or {}
    strategies = ((s.get("counterfactual", {}).get("curves") or {}).get(curve) or {}).get("strategies") or {}
    out = {"curve": curve, "methods": [m for m in methods if m in known], "kendall_tau": {}}
    for name, entry in sorted(strategies.items()):
        ranking = entry.get("ranking") or {}
        shared = {m: ranking[m] for m in out["methods"] if m in ranking}
        if len(shared) >= 2:
            out["kendall_tau"][name] = R.compare_rankings(shared, shared, known)["kendall_tau"]
    for c, e in scored.get("curves", {}).items():
        out["kendall_tau"][c] = (e.get("known_answer") or {}).get("kendall_tau")
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    ibo_io.write_text(path, buf.getvalue())


def run(ctx) -> dict:
    from ibo_jax.models import loaders

    t0 = time.time()
    if ctx.process_count > 1:
        raise ValueError("roar: runs in one process (its retrainings read in-memory arrays); run without --distributed")
    cfg = ctx.cfg
    methods, fractions, modes, seeds = _check(cfg)
    tcfg = train_config(ctx)
    spec = loaders.classifier_spec(ctx.input_dir("train_classifier"))
    data = _read_data(ctx)
    train_u8 = data["train"]["image"]
    fill = [float(v) for v in train_u8.reshape(-1, 3).astype(np.float64).mean(0) / 255.0]

    t_maps = time.time()
    map_seconds, degenerate = compute_maps(ctx, data, methods)
    wall_maps = time.time() - t_maps

    rows: list[dict] = []
    ran = 0
    ranked = [t for t in fractions if 0.0 < t < 1.0]
    t_mid = ranked[len(ranked) // 2] if ranked else None
    plan = [("baseline", "none", 0.0, s) for s in seeds]
    for m in [*methods, R.RANDOM]:
        plan += [(c, m, t, s) for t in fractions for c in modes for s in seeds]
    if cfg.leakage and t_mid is not None:
        plan += [("leakage", m, t_mid, s) for m in [*methods, R.RANDOM] for s in seeds[:1]]
    bar = ctx.progress(total=len(plan), desc="roar retraining", unit="run")
    cache: dict = {}

    def maps_of(method: str) -> dict[str, np.ndarray]:
        """One method's maps at a time (the plan runs a method's retrainings together)."""
        if method not in cache:
            cache.clear()
            cache[method] = random_split_maps(ctx, data) if method == R.RANDOM else load_maps(ctx, data, method)
        return cache[method]

    def fit(work, curve, method, t, seed):
        if curve == "baseline":
            # as float32 in [0, 1] like every removal's output: ROAR at t = 0 then trains on the same arrays
            images = {sp: data[sp]["image"].astype(np.float32) / 255.0 for sp in SPLITS}
        else:
            maps = maps_of(method)
            masks = {sp: R.top_fraction_mask(maps[sp], t, ids=data[sp]["index"]) for sp in SPLITS}
            if curve == "leakage":
                images = {sp: R.mask_only_images(masks[sp]) for sp in SPLITS}
            else:
                images = {sp: R.apply_removal(data[sp]["image"], masks[sp], fill, keep=curve == "kar") for sp in SPLITS}
        out = retrain(ctx, spec, tcfg, images, data, seed, work)
        return {"curve": curve, "method": method, "fraction": float(t), "seed": int(seed), **out}

    for curve, method, t, seed in plan:
        name = run_name(curve, method, t, seed)
        row, fresh = _run_or_load(ctx, name, partial(fit, curve=curve, method=method, t=t, seed=seed))
        ran += fresh
        rows.append(row)
        bar.update(1)
    bar.close()
    shutil.rmtree(ctx.dir / "retrain", ignore_errors=True)

    labels = data["test"]["label"]
    chance = float(max(np.mean(labels == 1), np.mean(labels != 1)))
    known, known_info = known_answer(ctx, str(cfg.known_curve))
    scored = R.scores(rows, known, methods=methods, n_test=len(labels), chance=chance,
                      margin=float(cfg.leakage_margin))
    n_maps = sum(len(data[sp]["label"]) for sp in SPLITS) * len(methods)
    seconds_maps = float(sum(sum(v.values()) for v in map_seconds.values()))
    seconds_retraining = float(sum(r["seconds"] for r in rows))
    section = ctx.config.get("train_classifier", ml_collections.ConfigDict())
    recipe = {"arch": spec.arch, "kwargs": dict(spec.kwargs), **dataclasses.asdict(tcfg),
              "init": "random (from scratch)", "epochs_from": "roar.epochs" if int(cfg.epochs) >= 1 else "train_classifier"}
    if section.get("init_weights"):
        recipe["init_weights"] = "ignored: ROAR retrains from a random initialization"
    tc_metrics = artifacts.read_json(artifacts.CLASSIFIER_METRICS, ctx.input_dir("train_classifier"), required=False)
    summary = {
        "curves": list(modes), "methods": methods, "random_map": (
            f"smooth random map: uniform noise on a {int(cfg.random_grid)}x{int(cfg.random_grid)} grid, bilinear "
            "upsampling, min-max scaled, one key per split and patch index (evaluation.roar.random_maps)"),
        "fractions": fractions, "seeds": seeds, "leakage_fraction": t_mid if cfg.leakage else None,
        "target_class": ctx.tumor_class, "maps": "the trained classifier's maps of the tumor logit for patches of "
        "both labels (float16); top-t pixels by value, ties broken by a random pixel order per patch",
        "fill": fill, "fill_is": "per-channel mean of the training patches in [0, 1]",
        "n_patches": {sp: int(len(data[sp]["label"])) for sp in SPLITS},
        "limit_train": int(cfg.limit_train), "degenerate_maps": degenerate,
        "recipe": recipe,
        "train_classifier_test_accuracy": (tc_metrics or {}).get("test", {}).get("accuracy"),
        "known_answer": known_info,
        "scores": scored,
        "leakage": scored["leakage"] if cfg.leakage and t_mid is not None else {
            "skipped": "roar.leakage = False" if not cfg.leakage else "no fraction strictly between 0 and 1"},
        "beside": beside(ctx, str(cfg.known_curve), known, scored, methods),
        "rows": rows,
        "cost": {"n_maps": n_maps, "seconds_maps": seconds_maps, "seconds_maps_per_method": map_seconds,
                 "seconds_maps_this_run": wall_maps, "n_retrainings": len(rows),
                 "n_retrainings_this_run": int(ran), "seconds_retraining": seconds_retraining,
                 "seconds": seconds_maps + seconds_retraining,
                 "note": ("ROAR/KAR need maps of every training patch (n_maps counts train, val and test), and one "
                          "retraining per method, fraction, mode and seed, plus the baseline and the leakage runs; "
                          "seconds sum the pieces, also those of an earlier run that was resumed")},
        "seconds": time.time() - t0,
    }
    artifacts.write_summary(ctx.dir, summary)
    write_csv(ctx.dir / "roar.csv", rows)
    return {"methods": methods, "fractions": fractions, "modes": modes, "seeds": seeds,
            "kendall_tau": summary["beside"].get("kendall_tau"),
            "confounded": {c: e["confounded"] for c, e in scored["curves"].items()},
            "n_retrainings": len(rows), "n_retrainings_this_run": int(ran),
            "seconds_maps": seconds_maps, "seconds_retraining": seconds_retraining, "seconds": time.time() - t0}
