"""Diffusion maths against closed forms (tiny tables, float64 references in numpy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax.repaint import diffusion as D


def test_linear_and_cosine_betas():
    b = D.beta_schedule("linear", 1000)
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    c = D.beta_schedule("cosine", 100)
    abar = np.cumprod(1 - c)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(abar[:-1], f(np.arange(1, 100) / 100) / f(0), rtol=1e-9)
    assert c.max() <= 0.999
    with pytest.raises(ValueError, match="kind"):
        D.beta_schedule("quadratic", 10)


def test_schedule_tables_closed_form():
    betas = D.beta_schedule("linear", 50, 1e-3, 0.2)
    s = D.make_schedule(betas)
    assert s.num_timesteps == 50 and s.betas.dtype == jnp.float32
    abar = np.cumprod(1 - betas)
    prev = np.append(1.0, abar[:-1])
    np.testing.assert_allclose(s.alphas_cumprod, abar, rtol=1e-6)
    np.testing.assert_allclose(s.alphas_cumprod_prev, prev, rtol=1e-6)
    pv = betas * (1 - prev) / (1 - abar)
    np.testing.assert_allclose(s.posterior_variance, pv, rtol=1e-5)
    assert s.posterior_variance[0] == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0], np.log(pv[1]), rtol=1e-5)
    np.testing.assert_allclose(s.fixed_large_variance[1:], betas[1:], rtol=1e-6)
    # the posterior mean coefficients reproduce q(x_{t-1}|x_t,x0) from Bayes on two Gaussians
    t = 7
    a_t = 1 - betas[t]
    prec = a_t / betas[t] + 1 / (1 - prev[t])
    c_x0 = (np.sqrt(prev[t]) / (1 - prev[t])) / prec
    c_xt = (np.sqrt(a_t) / betas[t]) / prec
    np.testing.assert_allclose([s.posterior_mean_coef1[t], s.posterior_mean_coef2[t]], [c_x0, c_xt], rtol=1e-5)
    np.testing.assert_allclose(s.posterior_variance[t], 1 / prec, rtol=1e-5)


def test_q_sample_predict_x0_roundtrip_and_pytree():
    s = D.make_schedule(D.beta_schedule("linear", 100))
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = jax.random.uniform(k1, (3, 4, 4, 3), minval=-1, maxval=1)
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([0, 50, 99])
    xt = jax.jit(D.q_sample)(s, x0, t, eps)
    ab = np.asarray(s.alphas_cumprod)[np.asarray(t)][:, None, None, None]
    np.testing.assert_allclose(xt, np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D.predict_x0(s, xt, t, eps), x0, atol=2e-4)
    assert float(D.eps_loss(eps, eps)) == 0.0
    assert float(D.eps_loss(eps + 1, eps)) == pytest.approx(1.0)
    leaves = jax.tree.leaves(s)
    assert len(leaves) == 13 and all(l.shape == (100,) for l in leaves)


def test_p_mean_variance_with_true_eps_is_posterior():
    s = D.make_schedule(D.beta_schedule("linear", 100))
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    x0 = jax.random.uniform(k1, (2, 3, 3, 1), minval=-0.9, maxval=0.9)
    eps = jax.random.normal(k2, x0.shape)
    t = jnp.array([10, 60])
    xt = D.q_sample(s, x0, t, eps)
    out = D.p_mean_variance(s, eps, xt, t, clip=True)
    mean, var, logv = D.q_posterior_mean_variance(s, x0, xt, t)
    np.testing.assert_allclose(out["mean"], mean, atol=1e-4)
    np.testing.assert_allclose(out["variance"], var)
    large = D.p_mean_variance(s, eps, xt, t, var="fixed_large")
    np.testing.assert_allclose(large["variance"][:, 0, 0, 0], np.asarray(s.betas)[[10, 60]])
    # clipping: a huge eps pushes x0 outside [-1, 1]
    clipped = D.p_mean_variance(s, eps * 0 - 50, xt, t, clip=True)["pred_x0"]
    assert float(jnp.max(jnp.abs(clipped))) <= 1.0
    noise = jax.random.normal(k3, x0.shape)
    step = D.p_sample_step(s, eps, xt, t, noise)
    np.testing.assert_allclose(step, mean + jnp.exp(0.5 * logv) * noise, atol=1e-5)
    # no noise at t = 0
    t0 = jnp.array([0, 0])
    step0 = D.p_sample_step(s, eps, xt, t0, noise)
    np.testing.assert_allclose(step0, D.p_mean_variance(s, eps, xt, t0)["mean"])
    with pytest.raises(ValueError, match="var"):
        D.p_mean_variance(s, eps, xt, t, var="learned")


def test_space_timesteps_matches_improved_diffusion():
    kept = D.space_timesteps(1000, 250)
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999
    # fractional stride 999/249 rounded (Python's round), an independent spelling
    stride = 999 / 249
    assert kept == [round(i * stride) for i in range(250)] and kept[:5] == [0, 4, 8, 12, 16]
    assert D.space_timesteps(1000, "250") == kept
    assert D.space_timesteps(10, "ddim5") == [0, 2, 4, 6, 8]
    two = D.space_timesteps(100, "10,5")
    assert len(two) == 15 and two[:10] == [round(i * 49 / 9) for i in range(10)] and two[10] == 50
    assert D.space_timesteps(1000, 1000) == list(range(1000))
    with pytest.raises(ValueError, match="section"):
        D.space_timesteps(10, 20)


def test_respace_keeps_alpha_bars():
    betas = D.beta_schedule("linear", 1000)
    keep = D.space_timesteps(1000, 250)
    nb, tmap = D.respace(betas, keep)
    assert nb.shape == (250,) and tmap.dtype == np.int32 and list(tmap) == keep
    np.testing.assert_allclose(np.cumprod(1 - nb), np.cumprod(1 - betas)[keep], rtol=1e-12)
    full, ident = D.respace(betas, range(1000))
    np.testing.assert_allclose(full, betas, rtol=1e-9)
    with pytest.raises(ValueError, match="use_timesteps"):
        D.respace(betas, [1000])
