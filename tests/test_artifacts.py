"""The files between stages: every reader round-trips its writer and rejects a missing or
malformed file with one line naming it."""

import numpy as np
import pytest

from ibo_jax import artifacts
from ibo_jax import io as ibo_io

N, M, H, W = 3, 2, 8, 8


def _ev(twin=True):
    rng = np.random.default_rng(0)
    ev = {"index": np.arange(N, dtype=np.int64), "image": rng.integers(0, 255, (N, H, W, 3), dtype=np.uint8),
          "label": np.ones(N, np.int32), "tumor_mask": np.zeros((N, H, W), bool)}
    ev["tumor_mask"][:, 2:5, 2:5] = True
    if twin:
        ev["twin"] = ev["image"].copy()
    else:
        ev["twin_unavailable"] = np.asarray("not synthetic")
    return ev


def _hm():
    rng = np.random.default_rng(1)
    return {"methods": np.asarray(["gradcam", "random"]), "controls": np.asarray(["random"]),
            "heatmaps": rng.random((N, M, H, W)).astype(np.float16),
            "levels": rng.integers(1, 6, (N, M, H, W)).astype(np.int8), "n_levels": np.full((N, M), 5, np.int8),
            "k": np.int32(5), "valid": np.ones((N, M), bool), "cam_valid": np.ones((N, M), bool)}


def _explain_dir(tmp_path):
    d = tmp_path / "explain"
    artifacts.write_eval_set(d, _ev())
    artifacts.write_heatmaps(d, _hm())
    return d


def _one_line_naming(excinfo, path):
    msg = str(excinfo.value)
    assert "\n" not in msg and str(path) in msg, msg


def test_explained_round_trip(tmp_path):
    ev, hm = artifacts.read_explained(_explain_dir(tmp_path))
    assert hm["methods"] == ["gradcam", "random"] and hm["controls"] == ["random"]
    np.testing.assert_array_equal(ev["image"], _ev()["image"])
    twins, why = artifacts.twins(ev)
    assert twins is not None and why == ""
    artifacts.write_eval_set(tmp_path / "e2", _ev(twin=False))
    assert artifacts.twins(ibo_io.read_npz(tmp_path / "e2" / "eval_set.npz")) == (None, "not synthetic")


def test_writers_refuse_what_readers_would_refuse(tmp_path):
    ev = _ev()
    ev["image"] = ev["image"].astype(np.float32)
    with pytest.raises(artifacts.ArtifactError, match="'image'"):
        artifacts.write_eval_set(tmp_path, ev)
    assert not (tmp_path / "eval_set.npz").exists()


@pytest.mark.parametrize("case", ["missing", "garbage", "no_image", "bad_mask", "heat_shape", "valid_shape"])
def test_read_explained_rejects_malformed(tmp_path, case):
    d = _explain_dir(tmp_path)
    ev, hm = _ev(), _hm()
    target = d / ("heatmaps.npz" if case in ("heat_shape", "valid_shape") else "eval_set.npz")
    if case == "missing":
        target.unlink()
    elif case == "garbage":
        target.write_bytes(b"PK\x03\x04 not a zip")
    elif case == "no_image":
        ibo_io.write_npz(target, {k: v for k, v in ev.items() if k != "image"})
    elif case == "bad_mask":
        ibo_io.write_npz(target, dict(ev, tumor_mask=ev["tumor_mask"][:, :4]))
    elif case == "heat_shape":
        ibo_io.write_npz(target, dict(hm, heatmaps=hm["heatmaps"][:, :1]))
    elif case == "valid_shape":
        ibo_io.write_npz(target, dict(hm, valid=hm["valid"][:2]))
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_explained(d)
    _one_line_naming(e, target)


def _geo():
    from ibo_jax.evaluation import geometry

    hm = _hm()
    return geometry.compute(hm["heatmaps"].astype(np.float32), hm["levels"], hm["n_levels"], hm["cam_valid"],
                            _ev()["tumor_mask"], curves=("morf",), n_masks=4)


def test_geometry_round_trip_and_method_check(tmp_path):
    artifacts.write_geometry(tmp_path, _geo(), methods=["gradcam", "random"])
    geo = artifacts.read_geometry(tmp_path, methods=["gradcam", "random"])
    assert geo["counts"]["morf"].shape == (N, M, 4)
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_geometry(tmp_path, methods=["gradcam", "oracle"])
    _one_line_naming(e, tmp_path / "masks.npz")


@pytest.mark.parametrize("case", ["missing", "garbage", "no_counts", "counts_shape"])
def test_read_geometry_rejects_malformed(tmp_path, case):
    artifacts.write_geometry(tmp_path, _geo(), methods=["gradcam", "random"])
    path = tmp_path / "masks.npz"
    z = ibo_io.read_npz(path)
    if case == "missing":
        path.unlink()
    elif case == "garbage":
        path.write_bytes(b"\x00" * 10)
    elif case == "no_counts":
        ibo_io.write_npz(path, {k: v for k, v in z.items() if k != "counts_morf"})
    elif case == "counts_shape":
        ibo_io.write_npz(path, dict(z, counts_morf=z["counts_morf"][:1]))
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_geometry(tmp_path)
    _one_line_naming(e, path)


def _store(d, stored=False):
    block = {"pos": np.arange(2, dtype=np.int32), "method": np.zeros(2, np.int16), "mask": np.ones(2, np.int16),
             "draw": np.zeros(2, np.int16)}
    if stored:
        block.update(p=np.array([0.2, 0.3], np.float32), logit=np.array([-1.0, -0.5], np.float32))
    else:
        block["image"] = np.zeros((2, H, W, 3), np.uint8)
    f = artifacts.block_file("s", "morf", "c0000")
    ibo_io.write_npz(d / f, block)
    artifacts.write_layout(d, {"blocks": [{"strategy": "s", "curve": "morf", "name": "c0000", "file": f}],
                               "methods": ["gradcam", "random"], "predicted_by": {"s": "stored" if stored else "classifier"}})
    return d / f


@pytest.mark.parametrize("stored", [False, True])
def test_occluded_blocks_round_trip(tmp_path, stored):
    _store(tmp_path, stored)
    (block,) = list(artifacts.occluded_blocks(tmp_path))
    assert block["predicted_by"] == ("stored" if stored else "classifier")
    assert ("image" in block) != stored and len(block["pos"]) == 2


@pytest.mark.parametrize("case", ["no_layout", "layout_garbage", "layout_no_blocks", "block_missing",
                                  "block_no_image", "block_lengths", "stored_without_p"])
def test_occluded_store_rejects_malformed(tmp_path, case):
    f = _store(tmp_path)
    layout = tmp_path / "layout.json"
    target = f
    z = ibo_io.read_npz(f)
    if case == "no_layout":
        layout.unlink()
        target = layout
    elif case == "layout_garbage":
        layout.write_text("{not json")
        target = layout
    elif case == "layout_no_blocks":
        ibo_io.write_json(layout, {"methods": []})
        target = layout
    elif case == "block_missing":
        f.unlink()
    elif case == "block_no_image":
        ibo_io.write_npz(f, {k: v for k, v in z.items() if k != "image"})
    elif case == "block_lengths":
        ibo_io.write_npz(f, dict(z, pos=np.arange(3, dtype=np.int32)))
    elif case == "stored_without_p":
        ibo_io.write_json(layout, dict(ibo_io.read_json(layout), predicted_by={"s": "stored"}))
    with pytest.raises(artifacts.ArtifactError) as e:
        list(artifacts.occluded_blocks(tmp_path))
    _one_line_naming(e, target)


def _score_arrays():
    from ibo_jax.evaluation.scores import ScoreTable

    geo = _geo()
    table = ScoreTable.from_geometry(geo, image_id=np.arange(N), label=np.ones(N), methods=["gradcam", "random"],
                                controls=["random"], p0=np.full(N, 0.9), logit0=np.full(N, 2.0))
    res = {}
    for i, s in enumerate(("blackening", "ibo")):
        arr = {"p": np.full((N, 2), 0.1 * (i + 1)), "logit": np.zeros((N, 2)), "ssim_twin": np.ones((N, 2))}
        res[s] = artifacts.Residual(arr, np.ones((N + i, 4), np.float32), np.arange(N + i) % N)
    return artifacts.ScoreArrays(table=table, feat0=np.zeros((N, 4)), twin_p=np.full(N, 0.05),
                                 twin_logit=np.zeros(N), twin_feat=np.zeros((N, 4)), residual=res)


def test_score_arrays_round_trip_with_structured_residuals(tmp_path):
    artifacts.write_score_arrays(tmp_path, _score_arrays())
    z = ibo_io.read_npz(tmp_path / "scores.npz")
    assert not any(k.startswith("extra__residual__") for k in z)  # arrays, not key strings
    back = artifacts.read_score_arrays(tmp_path)
    assert list(back.residual) == ["blackening", "ibo"]
    np.testing.assert_array_equal(back.residual["ibo"].get("p"), np.full((N, 2), 0.2))
    assert back.residual["ibo"].feat.shape == (N + 1, 4) and back.residual["blackening"].pos.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(back.twin_p, np.full(N, 0.05))
    assert back.table.methods == ["gradcam", "random"]


@pytest.mark.parametrize("case", ["missing", "garbage", "not_a_table", "twin_shape", "residual_shape", "residual_rows"])
def test_read_score_arrays_rejects_malformed(tmp_path, case):
    artifacts.write_score_arrays(tmp_path, _score_arrays())
    path = tmp_path / "scores.npz"
    z = ibo_io.read_npz(path)
    if case == "missing":
        path.unlink()
    elif case == "garbage":
        path.write_bytes(b"garbage")
    elif case == "not_a_table":
        ibo_io.write_npz(path, {"x": np.zeros(2)})
    elif case == "twin_shape":
        ibo_io.write_npz(path, dict(z, extra__twin_p=np.zeros(N + 1)))
    elif case == "residual_shape":
        ibo_io.write_npz(path, dict(z, extra__residual_p=np.zeros((2, N + 1, 2))))
    elif case == "residual_rows":
        ibo_io.write_npz(path, dict(z, extra__residual_row_pos=np.zeros(1, np.int64)))
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_score_arrays(tmp_path)
    _one_line_naming(e, path)


@pytest.mark.parametrize("case", ["missing", "garbage", "not_object"])
def test_summaries_reject_malformed(tmp_path, case):
    d = tmp_path / "trust"
    artifacts.write_summary(d, {"a": 1})
    assert artifacts.read_summary(d) == {"a": 1}
    path = d / "summary.json"
    if case == "missing":
        path.unlink()
        assert artifacts.read_summary(d, required=False) is None
    elif case == "garbage":
        path.write_text("{")
    else:
        path.write_text("[1, 2]")
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_summary(d)
    _one_line_naming(e, path)


@pytest.mark.parametrize("art", [artifacts.CLASSIFIER_METRICS, artifacts.DATASET, artifacts.SWEEP_JSON])
def test_json_artifacts_name_the_file(tmp_path, art):
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_json(art, tmp_path)
    _one_line_naming(e, art.path(tmp_path))
    assert f"run the {art.stage} stage" in str(e.value)
    art.path(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    art.path(tmp_path).write_text("nope")
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_json(art, tmp_path)
    _one_line_naming(e, art.path(tmp_path))


def test_figures_in_report_order(tmp_path):
    for stage in ("occlude", "data"):
        (tmp_path / stage).mkdir()
        artifacts.figure_path(stage, tmp_path / stage).write_bytes(b"png")
    found = artifacts.figures({s: tmp_path / s for s in ("data", "explain", "occlude")})
    assert [p.parent.name for p, _ in found] == ["data", "occlude"]
    assert artifacts.copy_figure(found[0][0], tmp_path) == "data_examples.png"


def test_residual_of_a_strategy_without_features_round_trips(tmp_path):
    """A strategy that stores its own predictions has no classifier features: its residual rows
    are kept (pos, p) with NaN features beside the others' real ones."""
    from ibo_jax.evaluation import scoring

    arrays = _score_arrays()
    rows = {"pos": np.array([0, 2]), "draw": np.zeros(2, np.int64), "p": np.array([0.3, 0.4])}
    r = scoring.residual_arrays(rows, N)
    assert r["feat"].shape == (2, 0)
    arrays.residual["token_drop"] = artifacts.Residual({"p": r["p"]}, r["feat"], r["pos"])
    artifacts.write_score_arrays(tmp_path, arrays)
    back = artifacts.read_score_arrays(tmp_path)
    td = back.residual["token_drop"]
    assert td.pos.tolist() == [0, 2] and np.isnan(td.feat).all() and td.get("ssim_twin") is None
    np.testing.assert_array_equal(td.get("p")[[0, 2], 0], [0.3, 0.4])
    assert np.isfinite(back.residual["ibo"].feat).all()
