"""DDPM training: the pure step, augmentation, EMA, checkpoints + resume, sampler, the stage."""

import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ibo_jax import parallel
from ibo_jax.models.unet import unet2d
from ibo_jax.repaint import diffusion
from ibo_jax.train import ddpm

ARCH = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, attention_head_dim=16)
S = 16


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([0.85, 0.55, 0.75], np.float32)  # pinkish, like H&E
    return np.clip(base + 0.08 * rng.standard_normal((n, S, S, 3)), 0, 1).astype(np.float32)


def test_dihedral_augment_is_a_symmetry():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    y = np.asarray(ddpm.dihedral_augment(x, jax.random.key(3)))
    for i in range(2):
        cands = [np.rot90(np.asarray(x[i]), k) for k in range(4)]
        cands += [np.flip(c, axis=1) for c in cands]
        assert any(np.array_equal(y[i], c) for c in cands)
    with pytest.raises(ValueError, match="square"):
        ddpm.dihedral_augment(jnp.zeros((1, 4, 6, 3)), jax.random.key(0))


@pytest.mark.slow
def test_step_learns_ema_checkpoint_and_sampler(tmp_path):
    model = unet2d(**ARCH)
    tx = ddpm.make_optimizer(2e-3, warmup_steps=2)
    graphdef, state = ddpm.init_state(model, tx)
    betas = diffusion.beta_schedule("linear", 100)
    step = ddpm.make_train_step(graphdef, tx, diffusion.make_schedule(betas), ema_decay=0.9)
    mesh = parallel.make_mesh()
    state = parallel.replicate(state, mesh)
    imgs = parallel.shard_batch(_images(4), mesh)
    losses = []
    for i in range(12):
        state, m = step(state, imgs, jax.random.key(i))
        losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses)) and int(state["step"]) == 12
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    p, e = jax.tree.leaves(state["params"])[0], jax.tree.leaves(state["ema"])[0]
    assert not np.allclose(p, e)  # EMA lags the parameters

    mngr = ddpm.checkpoint_manager(tmp_path / "ckpt")
    ddpm.save_checkpoint(mngr, state)
    restored = ddpm.restore_checkpoint(mngr, state)
    assert int(restored["step"]) == 12
    np.testing.assert_array_equal(jax.tree.leaves(restored["ema"])[0], e)

    ddpm.save_eps_model(tmp_path, model.config, state["ema"], betas=betas, image_size=S)
    em = ddpm.load_eps_model(tmp_path)
    assert em.betas.dtype == np.float32 and em.betas.shape == (100,) and em.image_size == S
    x = jax.random.normal(jax.random.key(0), (2, S, S, 3))
    t = jnp.array([5, 50], jnp.int32)
    want = ddpm.make_apply(graphdef)(state["ema"], x, t)
    np.testing.assert_allclose(np.asarray(em(x, t)), np.asarray(want), atol=1e-5)
    s1 = np.asarray(ddpm.sample(em, jax.random.key(1), 2, num_steps=5))
    s2 = np.asarray(ddpm.sample(em, jax.random.key(1), 2, num_steps=5))
    assert s1.shape == (2, S, S, 3) and np.all(np.isfinite(s1)) and s1.min() >= 0 and s1.max() <= 1
    np.testing.assert_array_equal(s1, s2)


def test_load_eps_model_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        ddpm.load_eps_model(tmp_path)


class _Killed(Exception):
    pass


def _fake_patches(kill_after=None):
    """Stands in for ibo_jax.data.patches: an endless loader of normal patches."""
    mod = types.ModuleType("ibo_jax.data.patches")

    def make_loader(data_dir, split, *, batch_size, shuffle, seed, num_epochs, label=None,
                    shard_index=0, shard_count=1, drop_remainder=True):
        assert split == "train" and label == 0  # normal patches of the train split only
        def gen():
            i = 0
            while True:
                if kill_after is not None and i >= kill_after:
                    raise _Killed()
                yield {"image": _images(batch_size, seed=seed + i), "label": np.zeros(batch_size, np.int32)}
                i += 1
        return gen()

    mod.make_loader = make_loader
    return mod


def _ctx(tmp_path, cfg):
    from ibo_jax.rng import root_key

    d = tmp_path / "train_ddpm"
    d.mkdir(exist_ok=True)
    config = ml_collections.ConfigDict({"seed": 0, "image_size": S, "num_classes": 2})
    return types.SimpleNamespace(
        name="train_ddpm", dir=d, workdir=tmp_path, cfg=cfg, config=config, key=root_key(0),
        mesh=parallel.make_mesh(), process_index=0, process_count=1,
        input_dir=lambda name: tmp_path / name, progress=lambda it, **kw: it,
        scalar=lambda *a, **k: None, image=lambda tag, img, step: IMAGES.append((tag, img.shape, step)))


IMAGES: list = []  # TensorBoard images the stage logged: (tag, shape, step)


def test_stage_runs_resumes_and_writes_outputs(tmp_path, monkeypatch):
    from ibo_jax.stages import train_ddpm

    cfg = train_ddpm.default_config()
    cfg.update(dict(block_out_channels=ARCH["block_out_channels"], layers_per_block=1, attention_levels=(False, False),
                    attention_head_dim=16, T=50, num_steps=6, batch_size=4, log_every=1,
                    checkpoint_every=3, n_samples=4, sample_steps=3, warmup_steps=1))
    monkeypatch.setitem(sys.modules, "ibo_jax.data.patches", _fake_patches(kill_after=4))
    ctx = _ctx(tmp_path, cfg)
    with pytest.raises(_Killed):
        train_ddpm.run(ctx)  # killed during step 5, after the checkpoint at step 3
    assert (ctx.dir / "checkpoints").is_dir()
    monkeypatch.setitem(sys.modules, "ibo_jax.data.patches", _fake_patches())
    IMAGES.clear()
    out = train_ddpm.run(ctx)
    assert out["resumed_from"] == 3 and out["steps"] == 6
    assert IMAGES and IMAGES[-1][0] == "train_ddpm/samples" and IMAGES[-1][2] == 6  # the final grid
    for f in ("samples.png", "real.png", "loss.png", "loss.csv", "model.json"):
        assert (ctx.dir / f).is_file(), f
    assert len((ctx.dir / "loss.csv").read_text().split()) == 1 + 6
    em = ddpm.load_eps_model(ctx.dir)
    assert em.image_size == S and em.betas.shape == (50,)


_DP_SCRIPT = r"""
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from ibo_jax import parallel
from ibo_jax.models.unet import unet2d
from ibo_jax.repaint import diffusion
from ibo_jax.train import ddpm
imgs = np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
out = []
for nd in (1, 2):
    mesh = parallel.make_mesh(jax.devices()[:nd])
    m = unet2d((8,), 1, norm_num_groups=4, attention_head_dim=8)  # one level: the step is what is tested
    tx = ddpm.make_optimizer(2e-3, 2)
    g, st = ddpm.init_state(m, tx)
    step = ddpm.make_train_step(g, tx, diffusion.make_schedule(diffusion.beta_schedule("linear", 100)))
    st = parallel.replicate(st, mesh)
    for i in range(2):
        st, met = step(st, parallel.shard_batch(imgs, mesh), jax.random.key(i))
    out.append(np.asarray(jax.tree.leaves(st["params"])[0]))
assert np.abs(out[0] - out[1]).max() < 1e-5, np.abs(out[0] - out[1]).max()
print("ok")
"""


@pytest.mark.slow
def test_data_parallel_matches_single_device():
    """Two forced host devices (batch sharded over `data`) give the single-device update."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run([sys.executable, "-c", _DP_SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
