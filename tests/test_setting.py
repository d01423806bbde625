"""`repaint.Setting`: the same inpaintings as the keyword form, its label, cost and errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax import occlusion, repaint

BETAS = np.linspace(0.01, 0.3, 20)


def _eps(x, t):  # a tiny eps model: pulls the regenerated pixels towards 0
    return 0.3 * x + 0.01 * t[:, None, None, None].astype(x.dtype)


def _inputs():
    x0 = jax.random.uniform(jax.random.key(0), (3, 4, 4, 3), minval=-1.0, maxval=1.0)
    keep = jnp.ones((3, 4, 4, 1)).at[:, 1:3, 1:3].set(0.0)
    return x0, keep


@pytest.mark.parametrize("sampler", sorted(repaint.SAMPLERS))
def test_setting_and_keywords_give_the_same_inpainting(sampler):
    x0, keep = _inputs()
    s = repaint.Setting(sampler, t_T=6, jump_length=2, jump_n_sample=2, eta=0.3 if sampler != "repaint" else None)
    kw = dict(sampler=sampler, t_T=6, jump_length=2, jump_n_sample=2, eta=s.eta)
    a = repaint.inpaint(_eps, x0, keep, jax.random.key(1), betas=BETAS, **kw)
    b = repaint.inpaint(_eps, x0, keep, jax.random.key(1), betas=BETAS, setting=s)
    c = repaint.inpaint(_eps, x0, keep, jax.random.key(1), betas=BETAS, **s.as_kwargs())
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))
    # a keyword equal to the setting's value (or left at its default) is no conflict
    d = repaint.inpaint(_eps, x0, keep, jax.random.key(1), betas=BETAS, setting=s, t_T=6)
    assert np.array_equal(np.asarray(a), np.asarray(d))


@pytest.mark.parametrize("sampler", sorted(repaint.SAMPLERS))
def test_ibo_strategy_takes_a_setting(sampler):
    class Eps:
        params = {"w": jnp.float32(0.2)}
        betas = BETAS.astype(np.float32)
        image_size = 4

        @staticmethod
        def apply(params, x, t):
            return params["w"] * x

    images = jax.random.uniform(jax.random.key(2), (3, 4, 4, 3))
    remove = jnp.zeros((3, 4, 4), bool).at[:, 1:3, :2].set(True)
    keys = jax.random.split(jax.random.key(3), 3)
    s = repaint.Setting(sampler, t_T=5, jump_length=1, jump_n_sample=1)
    kw = dict(key=keys, eps_model=Eps(), progress=False)
    a = occlusion.apply("ibo", images, remove, sampler=sampler, t_T=5, jump_length=1, jump_n_sample=1, **kw)
    b = occlusion.apply("ibo", images, remove, setting=s, **kw)
    c = occlusion.apply("ibo", images, remove, setting=("repaint", 5, 1, 1) if sampler == "repaint" else
                        {"sampler": sampler, "t_T": 5}, **kw)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))
    with pytest.raises(ValueError, match=r"ibo: setting=.*conflicting keywords t_T=7"):
        occlusion.apply("ibo", images, remove, setting=s, t_T=7, **kw)


def test_name_cost_and_forms():
    a = repaint.Setting("ddnm", t_T=5, jump_length=1, jump_n_sample=1)
    b = dataclasses.replace(a, eta=0.5)
    assert a.name == "ddnm(5,1,1)" and b.name == "ddnm(5,1,1,eta=0.5)" and a.file_stem != b.file_stem
    assert repaint.Setting("repaint", 4, 2, 2, jump2_length=2).name != repaint.Setting("repaint", 4, 2, 2).name
    for t_T, j, r in ((5, 1, 1), (25, 5, 2), (250, 10, 10)):
        s = repaint.Setting("repaint", t_T, j, r)
        assert s.network_calls == repaint.network_calls("repaint", t_T, j, r)
        assert s.undo_steps == repaint.schedule_cost(t_T, j, r).undo_steps
    assert repaint.Setting("repaint", 250, 10, 10).network_calls == 2410
    assert repaint.Setting.parse((250, 10, 10)) == repaint.Setting("repaint", 250, 10, 10)
    assert repaint.Setting.parse(("ddnm", 5, 1, 1, 0.5)) == b
    assert repaint.Setting.from_mapping({"sampler": "ddnm", "t_T": 5, "eta": -1.0}) == a  # eta < 0: default
    from ibo_jax.evaluation.sweep import Setting  # the old place: the same object

    assert Setting is repaint.Setting


@pytest.mark.parametrize("make, match", [
    (lambda: repaint.Setting("ddrm", 5), r"sampler must be one of"),
    (lambda: repaint.Setting("ddnm", 0), r"t_T must be an integer >= 1, got 0"),
    (lambda: repaint.Setting("ddnm", 5, jump_length=2.5), r"jump_length must be an integer"),
    (lambda: repaint.Setting("ddnm", 5, eta=-0.1), r"eta must be None .* got -0.1"),
    (lambda: repaint.Setting("ddnm", 5, var="learned"), r"var must be one of"),
    (lambda: repaint.Setting.from_mapping({"sampler": "ddnm", "t_T": 5, "steps": 3}), r"unknown field\(s\) \['steps'\]"),
    (lambda: repaint.Setting.parse(("ddnm", 5, 1)), r"expected \(t_T, jump_length, jump_n_sample\)"),
    (lambda: repaint.Setting.parse((5, "a", 1)), r"'a' is not an integer"),
])
def test_bad_settings_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_setting_and_conflicting_keywords_is_an_error():
    x0, keep = _inputs()
    s = repaint.Setting("ddnm", t_T=5)
    with pytest.raises(ValueError, match=r"inpaint: setting=ddnm\(5,1,1\) and conflicting keywords sampler='ddim_repaint'"):
        repaint.inpaint(_eps, x0, keep, jax.random.key(0), betas=BETAS, setting=s, sampler="ddim_repaint")


def test_occlude_config_takes_a_setting_or_the_old_fields():
    from ibo_jax.stages import occlude

    c = occlude.default_config().ibo
    assert occlude.ibo_setting(c) == repaint.Setting("repaint", 10, 5, 2)  # the old fields
    c.sampler, c.t_T, c.eta = "ddnm", 5, 0.5
    assert occlude.ibo_setting(c) == repaint.Setting("ddnm", 5, 5, 2, eta=0.5)
    c = occlude.default_config().ibo
    c.setting = ("ddnm", 5, 1, 1)
    assert occlude.ibo_setting(c) == repaint.Setting("ddnm", t_T=5, jump_length=1, jump_n_sample=1)
    c.t_T = 5  # agrees with the setting
    assert occlude.ibo_setting(c).t_T == 5
    c.t_T = 7
    with pytest.raises(ValueError, match=r"occlude.ibo.setting = ddnm\(5,1,1\) conflicts with occlude.ibo.t_T=7"):
        occlude.ibo_setting(c)
    c = occlude.default_config().ibo
    c.setting = ("ddnm", 5, 1)
    with pytest.raises(ValueError, match=r"occlude.ibo.setting = \('ddnm', 5, 1\): expected"):
        occlude.ibo_setting(c)
