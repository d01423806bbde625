"""Every bad input gives one line that names the file, field or argument and what was expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _bad_npz(path: Path) -> str:
    n = 12
    np.savez(path, image=np.zeros((n, 64, 64, 3), np.uint8), label=np.array([0, 1] * 6) * (1 + (np.arange(n) == 3)),
             tumor_mask=np.zeros((n, 64, 64), bool), split=np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2))
    return str(path)


@pytest.mark.parametrize("args, expected", [
    (["--config", "configs/demo.py", "--config.no_such_field=3"],
     "unknown config field 'no_such_field' (--config.no_such_field=3)"),
    (["--config", "configs/no_such_file.py"], "config file 'configs/no_such_file.py' not found"),
    (["--config", "configs/demo.py", "--config.data.n_patches=many"], "--config.data.n_patches=many: invalid literal"),
    (["--config", "configs/demo.py", "--config.data.source=npz", "--config.data.npz_path={npz}"],
     "stage 'data': {npz}: 'label' must be 0 (normal) or 1 (tumor)"),
], ids=["unknown-key", "missing-file", "bad-value", "stage-error"])
def test_launcher_prints_one_error_line(tmp_path, args, expected):
    npz = _bad_npz(tmp_path / "bad.npz")
    args = [a.format(npz=npz) for a in args]
    env = dict(os.environ, JAX_PLATFORMS="cpu", IBO_JAX_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, "-m", "ibo_jax.launch", *args, "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and expected.format(npz=npz) in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "I1" not in proc.stderr  # no traceback, no INFO chatter
    if "stage" in expected:  # the traceback is kept in the work directory's log
        assert "Traceback" in (tmp_path / "w" / "error.log").read_text()


def _torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    good = tmp_path / "w.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, good)
    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(good.read_bytes()[:200])
    pickled = tmp_path / "pickled.pth"
    import argparse

    torch.save({"model": argparse.Namespace(a=1)}, pickled)  # an object: only a pickle can hold it
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 not a safetensors file")
    return trunc, pickled, junk


@pytest.mark.parametrize("which, message", [
    (0, r"truncated\.pth: unreadable or truncated torch checkpoint"),
    (1, r"pickled\.pth: refused: it holds pickled Python objects"),
    (2, r"junk\.safetensors: not a readable \.safetensors file"),
], ids=["truncated-pth", "pickle-only-pth", "garbage-safetensors"])
def test_checkpoints_name_the_file(tmp_path, which, message):
    from ibo_jax import models

    path = _torch_files(tmp_path)[which]
    with pytest.raises(ValueError, match=message) as info:
        models.from_torchvision("resnet18", path, num_classes=2)
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize("broken", ["config.json", "scheduler_config.json"])
def test_broken_diffusers_json_names_the_file(tmp_path, broken):
    from ibo_jax.train import ddpm

    (tmp_path / "unet").mkdir()
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"_class_name": "UNet2DModel", "sample_size": 16' +
                                                   ("" if broken == "config.json" else "}"))
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(
        '{"beta_schedule": "linear",' if broken == "scheduler_config.json" else "{}")
    with pytest.raises(ValueError, match=rf"{broken}: not valid JSON \(line 1"):
        ddpm.load_diffusers_ddpm(tmp_path)


def _nan(shape):
    x = np.full(shape, 0.5, np.float32)
    x.flat[1] = np.nan
    x.flat[2] = np.inf
    return x


def _cam_call():
    from flax import nnx

    from ibo_jax import cam, models

    model = models.resnet_small(num_classes=2, rngs=nnx.Rngs(0))
    cam.compute("gradcam", model, _nan((1, 32, 32, 3)))


def _occlusion_call():
    from ibo_jax import occlusion

    occlusion.apply("mean", _nan((1, 8, 8, 3)), np.zeros((1, 8, 8), bool))


def _inpaint_call():
    from ibo_jax import repaint

    repaint.inpaint(lambda x, t: x, _nan((1, 8, 8, 3)), np.ones((1, 8, 8, 1)), np.zeros(2, np.uint32),
                    betas=np.linspace(1e-4, 0.02, 10), t_T=5, jump_length=1, jump_n_sample=1)


def _kid_call():
    from ibo_jax import evaluation

    evaluation.kid(_nan((4, 3)), np.ones((4, 3)))


@pytest.mark.parametrize("call, name", [(_cam_call, "images"), (_occlusion_call, "images"),
                                        (_inpaint_call, "inpaint: x0"), (_kid_call, "kid: feats_a")],
                         ids=["cam.compute", "occlusion.apply", "repaint.inpaint", "evaluation.kid"])
def test_non_finite_input_is_refused_with_the_count(call, name):
    with pytest.raises(ValueError, match=rf"{name}: 2 non-finite value\(s\)"):
        call()
