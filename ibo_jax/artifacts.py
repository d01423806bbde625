"""Every file one stage writes and another stage reads: its name, its writer, its reader, and the
checks that turn a missing or malformed file into one line naming it.

    ev, hm = artifacts.read_explained(workdir / "explain", need=("levels",))
    artifacts.write_summary(ctx.dir, summary)                  # <stage>/summary.json
    trust = artifacts.read_summary(workdir / "trust", required=False)
    for path, caption in artifacts.figures({"data": ..., "explain": ...}): ...

A stage reads its inputs and writes its outputs through these functions; no stage and no library
module spells another stage's file name. The stage folders are the pipeline's (`ctx.dir`,
`ctx.input_dir(name)`); this module never decides where a work directory is.

File                        what                                          written by / read by
data/dataset.json           what the patches are (source, GT kind)        data / report, twins
data/slides/slides.json     whole-slide extraction summary                data / report
train_classifier/metrics.json  validation accuracy of the chosen model    train_classifier / report
explain/eval_set.npz        index, image, label, tumor_mask (+ twin)      explain / occlude, score, trust, sweep
explain/heatmaps.npz        methods, controls, heatmaps, levels, valid    explain / occlude, score, trust, sweep
occlude/masks.npz           mask geometry (pixel counts, valid, GT IoU)   occlude / score
occlude/layout.json + chunks/  the occluded-image store (`OccludedStore`) occlude / score
score/scores.csv            the tidy table (public)                       score / users
score/summary.json          per strategy and curve: AUCs, rankings, MARD  score / report
score/scores.npz             dense score arrays, twins' predictions and   score / trust
                            residual evidence (`ScoreArrays`)
<stage>/summary.json        ddpm_check, trust                             them / report
repaint_sweep/sweep.csv, sweep.json                                       repaint_sweep / report

A removal strategy declares how its results are predicted (`PREDICTED_BY`): "classifier" (the
default: stored uint8 images re-predicted by the run's classifier), "stored" (the strategy wrote
p(tumor) and the logit itself, e.g. a ViT's token dropping: blocks carry `p`, `logit` and no
image) or the name of another model (images re-predicted by that model, e.g. a retrained
classifier; the score stage is given one predict function per name).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ibo_jax import io as ibo_io


class ArtifactError(ValueError):
    """A file between stages is missing or malformed (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One file a stage writes for others: `stage/file`."""

    stage: str
    file: str
    what: str

    def path(self, stage_dir: str | Path) -> Path:
        return Path(stage_dir) / self.file


DATASET = Artifact("data", "dataset.json", "what the patches are: source config, GT kind, split sizes")
SLIDES = Artifact("data", "slides/slides.json", "whole-slide extraction summary")
CLASSIFIER_METRICS = Artifact("train_classifier", "metrics.json", "the chosen classifier's validation metrics")
SWEEP_CSV = Artifact("repaint_sweep", "sweep.csv", "one row per sampler setting")
SWEEP_JSON = Artifact("repaint_sweep", "sweep.json", "the sweep's rows, reference and front")


def summary_artifact(stage: str) -> Artifact:
    """`<stage>/summary.json` (score, ddpm_check, trust)."""
    return Artifact(stage, "summary.json", f"the {stage} stage's summary")


# ----------------------------------------------------------------------------------------- JSON


def read_json(artifact: Artifact, stage_dir: str | Path, *, required: bool = True) -> Any:
    """The JSON of `artifact` in `stage_dir`; None when it is absent and not `required`."""
    path = artifact.path(stage_dir)
    if not path.is_file():
        if not required:
            return None
        raise ArtifactError(f"{path}: missing ({artifact.what}); run the {artifact.stage} stage first")
    try:
        return ibo_io.read_json(path)
    except ValueError as e:
        raise ArtifactError(str(e)) from e


def write_json(artifact: Artifact, stage_dir: str | Path, obj: Any) -> Path:
    path = artifact.path(stage_dir)
    ibo_io.write_json(path, obj)
    return path


def read_summary(stage_dir: str | Path, *, required: bool = True) -> dict | None:
    """`<stage>/summary.json` of the stage whose folder is `stage_dir`."""
    out = read_json(summary_artifact(Path(stage_dir).name), stage_dir, required=required)
    if out is not None and not isinstance(out, dict):
        raise ArtifactError(f"{Path(stage_dir) / 'summary.json'}: expected a JSON object, got {type(out).__name__}")
    return out


def write_summary(stage_dir: str | Path, summary: Mapping) -> Path:
    return write_json(summary_artifact(Path(stage_dir).name), stage_dir, dict(summary))


# -------------------------------------------------------------------------------- npz checking


def _read_npz(artifact: Artifact, stage_dir: str | Path) -> dict[str, np.ndarray]:
    path = artifact.path(stage_dir)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ({artifact.what}); run the {artifact.stage} stage first")
    try:
        return ibo_io.read_npz(path)
    except ValueError as e:
        raise ArtifactError(str(e)) from e


def _check(path: Path, arrays: Mapping[str, np.ndarray], spec: Mapping[str, tuple[str, int]],
           optional: Sequence[str] = ()) -> None:
    """spec: name -> (dtype kinds, e.g. 'iu' / 'f' / 'b' / 'U', number of dims)."""
    for name, (kinds, ndim) in spec.items():
        if name not in arrays:
            if name in optional:
                continue
            raise ArtifactError(f"{path}: missing array {name!r}")
        a = np.asarray(arrays[name])
        if a.dtype.kind not in kinds or a.ndim != ndim:
            raise ArtifactError(f"{path}: array {name!r} is {a.dtype} with {a.ndim} dims, expected "
                                f"{ndim} dims of kind {kinds!r}")


# ----------------------------------------------------------------------- the explain stage's files

EVAL_SET = Artifact("explain", "eval_set.npz", "the evaluation set (with counterfactual twins when known)")
HEATMAPS = Artifact("explain", "heatmaps.npz", "heatmaps, importance levels and validity per method")

_EVAL_SET = {"index": ("iu", 1), "image": ("u", 4), "label": ("iu", 1), "tumor_mask": ("b", 3), "twin": ("u", 4)}
_HEATMAPS = {"methods": ("U", 1), "controls": ("U", 1), "heatmaps": ("f", 4), "levels": ("iu", 4),
             "n_levels": ("iu", 2), "valid": ("b", 2), "cam_valid": ("b", 2)}


def write_eval_set(stage_dir: str | Path, ev: Mapping[str, np.ndarray]) -> Path:
    """explain/eval_set.npz: index int64 [N], image uint8 [N,H,W,3], label [N], tumor_mask bool
    [N,H,W], and twin uint8 [N,H,W,3] or twin_unavailable (the reason)."""
    path = EVAL_SET.path(stage_dir)
    _check(path, ev, _EVAL_SET, optional=("twin",))
    ibo_io.write_npz(path, ev)
    return path


def write_heatmaps(stage_dir: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """explain/heatmaps.npz: methods [M] (CAM methods, then controls), controls [C], heatmaps
    float16 [N,M,H,W], levels int8 [N,M,H,W], n_levels [N,M], k, valid and cam_valid bool [N,M]."""
    path = HEATMAPS.path(stage_dir)
    _check(path, arrays, _HEATMAPS)
    ibo_io.write_npz(path, arrays)
    return path


def read_explained(stage_dir: str | Path, *, need: Sequence[str] = ("heatmaps", "levels")) -> tuple[dict, dict]:
    """(evaluation set, heatmaps) of the explain stage, checked against each other.

    ev: index int64 [N], image uint8 [N, H, W, 3], label int32 [N], tumor_mask bool [N, H, W],
        twin uint8 [N, H, W, 3] or twin_unavailable str
    hm: methods [M] (list of str), controls [C] (list of str), heatmaps float16 [N, M, H, W],
        levels int8 [N, M, H, W], n_levels [N, M], valid bool [N, M] (those in `need` required)
    """
    from ibo_jax.evaluation.ranking import CONTROLS

    ev_path, hm_path = EVAL_SET.path(stage_dir), HEATMAPS.path(stage_dir)
    ev, hm = _read_npz(EVAL_SET, stage_dir), _read_npz(HEATMAPS, stage_dir)
    _check(ev_path, ev, {k: v for k, v in _EVAL_SET.items() if k != "twin"})
    _check(hm_path, hm, {k: _HEATMAPS[k] for k in ("methods", *need)})
    n, h, w, c = ev["image"].shape
    if c != 3:
        raise ArtifactError(f"{ev_path}: image has {c} channels, expected 3")
    for key in ("label", "index", "tumor_mask", "twin"):
        if key in ev and len(ev[key]) != n:
            raise ArtifactError(f"{ev_path}: {key} has {len(ev[key])} rows, image has {n}")
    if ev["tumor_mask"].shape != (n, h, w):
        raise ArtifactError(f"{ev_path}: tumor_mask has shape {ev['tumor_mask'].shape}, expected {(n, h, w)}")
    m = len(hm["methods"])
    for key in ("heatmaps", "levels"):
        if key in hm and hm[key].shape != (n, m, h, w):
            raise ArtifactError(f"{hm_path}: {key} has shape {hm[key].shape}, expected [N={n}, M={m}, H={h}, "
                                f"W={w}] to match eval_set.npz and the methods list")
    for key in ("n_levels", "valid", "cam_valid"):
        if key in hm and hm[key].shape != (n, m):
            raise ArtifactError(f"{hm_path}: {key} has shape {hm[key].shape}, expected [N={n}, M={m}]")
    hm["methods"] = [str(x) for x in hm["methods"]]
    hm["controls"] = [str(x) for x in hm.get("controls", [])] or [x for x in hm["methods"] if x in CONTROLS]
    return ev, hm


def twins(ev: Mapping) -> tuple[np.ndarray | None, str]:
    """(twin uint8 [N, H, W, 3] or None, why not) of a read evaluation set."""
    if "twin" in ev:
        return ev["twin"], ""
    return None, str(ev.get("twin_unavailable", "the evaluation set has no counterfactual twins"))


def twins_of(data_dir: str | Path, index: np.ndarray, images: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Counterfactual twins of any stored patches of the data stage (re-rendered synthetic
    patches; (None, why) for other data): the one place twins are obtained."""
    from ibo_jax.data.patches import counterfactual_twins

    return counterfactual_twins(data_dir, index, images)


# ------------------------------------------------------------------------ the occlude stage's files

GEOMETRY = Artifact("occlude", "masks.npz", "mask geometry of every curve")
LAYOUT = Artifact("occlude", "layout.json", "the occluded-image store's table of contents")


def write_geometry(stage_dir: str | Path, geo: dict, *, methods: Sequence[str]) -> Path:
    from ibo_jax.evaluation import geometry

    path = GEOMETRY.path(stage_dir)
    geometry.save(path, geo, methods=methods)
    return path


def read_geometry(stage_dir: str | Path, *, methods: Sequence[str] | None = None) -> dict:
    """occlude/masks.npz; with `methods`, checked against the explain stage's method list."""
    from ibo_jax.evaluation import geometry

    path = GEOMETRY.path(stage_dir)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ({GEOMETRY.what}); run the occlude stage first")
    try:
        geo = geometry.load(path)
    except (ValueError, KeyError) as e:
        raise ArtifactError(str(e) if str(path) in str(e) else f"{path}: {e}") from e
    n, m = geo["valid"].shape
    for curve, counts in geo["counts"].items():
        if counts.ndim != 3 or counts.shape[:2] != (n, m):
            raise ArtifactError(f"{path}: counts_{curve} has shape {counts.shape}, expected [N={n}, M={m}, n]")
    if methods is not None and list(geo["methods"]) != list(methods):
        raise ArtifactError(f"{path}: methods {list(geo['methods'])} differ from explain's {list(methods)}; "
                            "rerun the occlude stage")
    return geo


def read_layout(stage_dir: str | Path, *, methods: Sequence[str] | None = None) -> dict:
    """occlude/layout.json: strategies, curves, n_masks, fractions, draws, methods, blocks,
    residual_blocks, predicted_by {strategy: how}."""
    layout = read_json(LAYOUT, stage_dir)
    path = LAYOUT.path(stage_dir)
    if not isinstance(layout, dict) or not isinstance(layout.get("blocks"), list):
        raise ArtifactError(f"{path}: expected an object with a 'blocks' list")
    for b in layout["blocks"] + layout.get("residual_blocks", []):
        if not isinstance(b, dict) or any(k not in b for k in ("strategy", "curve", "name", "file")):
            raise ArtifactError(f"{path}: a block lacks one of strategy, curve, name, file: {b!r}")
    if methods is not None and layout.get("methods") and list(layout["methods"]) != list(methods):
        raise ArtifactError(f"{path}: methods {list(layout['methods'])} differ from explain's {list(methods)}; "
                            "rerun the occlude stage")
    return layout


def write_layout(stage_dir: str | Path, layout: Mapping) -> Path:
    return write_json(LAYOUT, stage_dir, dict(layout))


def predicted_by(layout: Mapping, strategy: str) -> str:
    """How a strategy's results are predicted: 'classifier', 'stored' or a model name."""
    return str(layout.get("predicted_by", {}).get(strategy, "classifier"))


RESIDUAL = "residual"  # blocks with the whole annotated region removed (method -1), listed apart
_BLOCK = {"pos": ("iu", 1), "method": ("iu", 1), "mask": ("iu", 1), "draw": ("iu", 1)}


def block_file(strategy: str, curve: str, name: str) -> str:
    """Path, relative to the occlude folder, of one block of occluded images."""
    return f"chunks/{strategy}__{curve}__{name}.npz"


def occluded_blocks(stage_dir: str | Path, *, strategy: str | None = None, curve: str | None = None,
                    name: str | None = None) -> Iterator[dict]:
    """Yields the occluded blocks in layout order: strategy, curve, name, predicted_by, pos int32
    [R], method int16 [R] (index into the layout's methods; -1 for residual blocks), mask int16
    [R] (1..n), draw int16 [R], and image uint8 [R, H, W, 3] or (predicted_by 'stored') p, logit [R].
    curve='residual' gives the blocks with the whole annotated region removed."""
    stage_dir = Path(stage_dir)
    layout = read_layout(stage_dir)
    listed = layout.get("residual_blocks", []) if curve == RESIDUAL else layout["blocks"]
    for b in listed:
        if any(want is not None and b[field] != want
               for field, want in (("strategy", strategy), ("curve", curve), ("name", name))):
            continue
        path = stage_dir / b["file"]
        if not path.is_file():
            raise ArtifactError(f"{path}: occluded block listed in {LAYOUT.file} is missing")
        try:
            arrays = ibo_io.read_npz(path)
        except ValueError as e:
            raise ArtifactError(str(e)) from e
        how = predicted_by(layout, b["strategy"])
        _check(path, arrays, {**_BLOCK, **({"p": ("f", 1), "logit": ("f", 1)} if how == "stored"
                                           else {"image": ("u", 4)})})
        rows = len(arrays["pos"])
        if any(len(v) != rows for v in arrays.values()):
            raise ArtifactError(f"{path}: arrays of different lengths "
                                f"({', '.join(f'{k} {len(v)}' for k, v in arrays.items())})")
        yield {"strategy": b["strategy"], "curve": b["curve"], "name": b["name"], "predicted_by": how, **arrays}


# -------------------------------------------------------------------------- the score stage's files

SCORES_CSV = Artifact("score", "scores.csv", "the tidy table: one row per image x method x strategy x curve x mask")
SCORE_ARRAYS = Artifact("score", "scores.npz", "dense score arrays, twins' predictions, residual evidence")

_RESIDUAL_KEYS = ("p", "logit", "ssim_orig", "psnr_orig", "ssim_twin", "psnr_twin")


@dataclasses.dataclass
class Residual:
    """One strategy's residual fills (the whole annotated region removed): [N, D] arrays (NaN
    where a patch has no tumor region) keyed p, logit, ssim/psnr against original and twin, plus
    feat [R, C] and pos [R] for the filled rows."""

    arrays: dict[str, np.ndarray]
    feat: np.ndarray
    pos: np.ndarray

    def get(self, key: str) -> np.ndarray | None:
        return self.arrays.get(key)


@dataclasses.dataclass
class ScoreArrays:
    """What score/scores.npz holds: the dense score table, the originals' pooled features, the
    twins' predictions (when there are twins) and the residual fills per strategy."""

    table: Any  # evaluation.study.ScoreTable
    feat0: np.ndarray | None = None  # [N, C]
    twin_p: np.ndarray | None = None  # [N]
    twin_logit: np.ndarray | None = None
    twin_feat: np.ndarray | None = None  # [N, C]
    residual: dict[str, Residual] = dataclasses.field(default_factory=dict)

    def extra(self) -> dict[str, np.ndarray]:
        """The flat arrays beside the table (what older readers call `extra`)."""
        out = {k: v for k, v in (("feat0", self.feat0), ("twin_p", self.twin_p), ("twin_logit", self.twin_logit),
                                 ("twin_feat", self.twin_feat)) if v is not None}
        for s, r in self.residual.items():
            out.update({f"residual__{s}__{k}": v for k, v in r.arrays.items()})
            out[f"residual__{s}__feat"], out[f"residual__{s}__pos"] = r.feat, r.pos
        return out


def write_score_arrays(stage_dir: str | Path, arrays: ScoreArrays) -> Path:
    """score/scores.npz. Residual fills are stored as structured arrays: residual_strategies [S],
    residual_<key> [S, N, D], residual_feat [R, C] with residual_row_strategy / residual_row_pos [R]."""
    extra: dict[str, np.ndarray] = {k: v for k, v in (("feat0", arrays.feat0), ("twin_p", arrays.twin_p),
                                                      ("twin_logit", arrays.twin_logit),
                                                      ("twin_feat", arrays.twin_feat)) if v is not None}
    names = list(arrays.residual)
    if names:
        res = [arrays.residual[s] for s in names]
        n = len(arrays.table.p0)
        draws = [max((np.shape(v)[1] for v in r.arrays.values()), default=1) for r in res]
        extra["residual_strategies"] = np.asarray(names, dtype=str)
        extra["residual_draws"] = np.asarray(draws, np.int32)
        for k in _RESIDUAL_KEYS:  # [S, N, D_max], NaN beyond a strategy's own draws or where absent
            if any(k in r.arrays for r in res):
                a = np.full((len(names), n, max(draws)), np.nan)
                for i, r in enumerate(res):
                    if k in r.arrays:
                        a[i, :, : draws[i]] = r.arrays[k]
                extra[f"residual_{k}"] = a
        width = max(np.shape(r.feat)[1] if np.ndim(r.feat) == 2 else 0 for r in res)
        extra["residual_feat"] = np.concatenate(  # rows of a strategy without features: NaN
            [r.feat if np.ndim(r.feat) == 2 and np.shape(r.feat)[1] == width
             else np.full((len(r.pos), width), np.nan) for r in res]).astype(np.float32)
        extra["residual_row_strategy"] = np.concatenate(
            [np.full(len(arrays.residual[s].pos), i, np.int32) for i, s in enumerate(names)])
        extra["residual_row_pos"] = np.concatenate([arrays.residual[s].pos for s in names]).astype(np.int64)
    path = SCORE_ARRAYS.path(stage_dir)
    arrays.table.save(path, extra)
    return path


def read_score_arrays(stage_dir: str | Path) -> ScoreArrays:
    """score/scores.npz as a ScoreArrays (errors name the file)."""
    from ibo_jax.evaluation.scores import ScoreTable

    path = SCORE_ARRAYS.path(stage_dir)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing ({SCORE_ARRAYS.what}); run the score stage first")
    try:
        table, extra = ScoreTable.load(path)
    except (ValueError, KeyError) as e:
        raise ArtifactError(str(e) if str(path) in str(e) else f"{path}: {e}") from e
    out = ScoreArrays(table=table, feat0=extra.get("feat0"), twin_p=extra.get("twin_p"),
                      twin_logit=extra.get("twin_logit"), twin_feat=extra.get("twin_feat"))
    n = len(table.p0)
    for k in ("twin_p", "twin_logit"):
        v = getattr(out, k)
        if v is not None and v.shape != (n,):
            raise ArtifactError(f"{path}: {k} has shape {v.shape}, expected [N={n}]")
    if "residual_strategies" in extra:
        names = [str(s) for s in extra["residual_strategies"]]
        rs, rp, feat = extra.get("residual_row_strategy"), extra.get("residual_row_pos"), extra.get("residual_feat")
        if rs is None or rp is None or feat is None or not (len(rs) == len(rp) == len(feat)):
            raise ArtifactError(f"{path}: residual rows (residual_row_strategy, residual_row_pos, residual_feat) "
                                "missing or of different lengths")
        draws = extra.get("residual_draws", np.ones(len(names), np.int32))
        if len(draws) != len(names):
            raise ArtifactError(f"{path}: residual_draws has {len(draws)} entries for {len(names)} strategies")
        for i, s in enumerate(names):
            per = {}
            for k in _RESIDUAL_KEYS:
                if f"residual_{k}" in extra:
                    a = extra[f"residual_{k}"]
                    if a.ndim != 3 or a.shape[:2] != (len(names), n) or a.shape[2] < int(draws[i]):
                        raise ArtifactError(f"{path}: residual_{k} has shape {a.shape}, expected [S={len(names)}, "
                                            f"N={n}, D]")
                    if not np.all(np.isnan(a[i])):
                        per[k] = a[i, :, : int(draws[i])]
            out.residual[s] = Residual(per, feat[rs == i], rp[rs == i])
    return out


# ----------------------------------------------------------------------------------- figures


@dataclasses.dataclass(frozen=True)
class Figure:
    stage: str
    file: str
    caption: str


#: Figures stages draw for the report, in the order the report shows them (the report stage asks
#: for them by stage; the report does not know their names).
FIGURES: tuple[Figure, ...] = (
    Figure("data", "examples.png", "Example patches of the data set (tumor and normal)."),
    Figure("train_ddpm", "samples.png", "Samples of the DDPM trained on normal patches (what IBO inpaints with)."),
    Figure("explain", "heatmaps.png", "Heatmaps per CAM method (target class: tumor)."),
    Figure("occlude", "grid.png", "Occlusion strategies (rows) x progressive masks M1..M4 (columns)."),
    Figure("repaint_sweep", "cost_quality.png", "Inpainting samplers: network calls per inpainting against realism "
           "(box masks, against the originals and the counterfactual boxes), the p(tumor) left when the annotated "
           "region is filled, and the MARD of the CAM ranking (bars: bootstrap 95% intervals; red: Pareto front)."),
)


def figure_path(stage: str, stage_dir: str | Path, file: str | None = None) -> Path:
    """Where `stage` draws its figure (the one FIGURES lists for it, or `file`)."""
    if file is None:
        found = [f for f in FIGURES if f.stage == stage]
        if len(found) != 1:
            raise KeyError(f"stage {stage!r} has {len(found)} registered figures; name the file")
        file = found[0].file
    return Path(stage_dir) / file


def figures(stage_dirs: Mapping[str, str | Path]) -> list[tuple[Path, str]]:
    """(path, caption) of every registered figure of the given stages that exists, in report order."""
    out = []
    for f in FIGURES:
        if f.stage in stage_dirs:
            p = Path(stage_dirs[f.stage]) / f.file
            if p.is_file():
                out.append((p, f.caption))
    return out


def copy_figure(src: str | Path, out_dir: str | Path) -> str:
    """Copies a stage's figure beside the report as `<stage>_<file>`; returns the new name."""
    src = Path(src)
    dst = Path(out_dir) / f"{src.parent.name}_{src.name}"
    with ibo_io.atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst.name
