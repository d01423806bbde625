"""The compiled RePaint sampler against the exact output law of RePaint on Gaussian data.

With x0 ~ N(mu, S) the exact eps(x_t, t) = sqrt(1 - a_t) (a_t S + (1 - a_t) I)^-1 (x_t - sqrt(a_t) mu)
is linear, so (without x0 clipping) every RePaint operation (undo, known-part injection, reverse
step, paste) is linear-Gaussian and the law of the sampler's output can be propagated exactly,
transition by transition along the official time list (single undo steps, not merged).
"""

import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax.repaint import diffusion as D
from ibo_jax.repaint.sampler import inpaint
from ibo_jax.repaint.schedule import jump_schedule

T, D_PIX = 20, 4  # trained steps; pixels of a [2, 2, 1] image
BETAS = np.linspace(0.01, 0.3, T)
RNG = np.random.default_rng(0)
MU = RNG.uniform(-0.5, 0.5, D_PIX)
_A = RNG.normal(size=(D_PIX, D_PIX))
SIGMA = 0.3 * _A @ _A.T / D_PIX + 0.05 * np.eye(D_PIX)
ABAR = np.cumprod(1 - BETAS)
M_TAB = np.stack([np.sqrt(1 - a) * np.linalg.inv(a * SIGMA + (1 - a) * np.eye(D_PIX)) for a in ABAR])
O_TAB = np.sqrt(ABAR)[:, None] * MU[None]
KEEP = np.array([1.0, 0.0, 0.0, 1.0])
X0 = np.array([0.5, 0.0, 0.0, -0.3])


def gauss_eps(x, t):  # x [N, 2, 2, 1], t [N] trained units
    flat = x.reshape(x.shape[0], -1)
    m, o = jnp.asarray(M_TAB, jnp.float32)[t], jnp.asarray(O_TAB, jnp.float32)[t]
    return jnp.einsum("nij,nj->ni", m, flat - o).reshape(x.shape)


def exact_law(t_T, j, r, eta=None):
    """Mean and covariance of RePaint's output, propagated in float64."""
    nb, tmap = D.respace(BETAS, D.space_timesteps(T, t_T))
    ab = np.cumprod(1 - nb)
    abp = np.append(1.0, ab[:-1])
    pv = nb * (1 - abp) / (1 - ab)
    I, K = np.eye(D_PIX), np.diag(KEEP)
    m, C, first = np.zeros(D_PIX), I.copy(), True
    times = jump_schedule(t_T, j, r)
    for a, b in zip(times[:-1], times[1:]):
        if b > a:  # undo: x_b = sqrt(1 - beta_b) x_a + sqrt(beta_b) z
            m, C = np.sqrt(1 - nb[b]) * m, (1 - nb[b]) * C + nb[b] * I
            continue
        if not first:  # inject the known part noised to level a
            m = K @ (np.sqrt(ab[a]) * X0) + (I - K) @ m
            C = (I - K) @ C @ (I - K) + (1 - ab[a]) * K
        first = False
        M, o = M_TAB[tmap[a]], O_TAB[tmap[a]]
        # eps = M x - M o ; x0hat = sr x - srm1 eps
        sr, srm1 = np.sqrt(1 / ab[a]), np.sqrt(1 / ab[a] - 1)
        X0x, X0c = sr * I - srm1 * M, srm1 * M @ o
        if eta is None:
            c1, c2 = nb[a] * np.sqrt(abp[a]) / (1 - ab[a]), (1 - abp[a]) * np.sqrt(1 - nb[a]) / (1 - ab[a])
            L, l, s2 = c1 * X0x + c2 * I, c1 * X0c, pv[a] if a > 0 else 0.0
        else:
            s2 = (eta**2) * pv[a] if a > 0 else 0.0
            d = np.sqrt(max(1 - abp[a] - (eta**2) * pv[a], 0.0))
            L = np.sqrt(abp[a]) * X0x + d * M
            l = np.sqrt(abp[a]) * X0c - d * M @ o
        m, C = L @ m + l, L @ C @ L.T + s2 * I
    m = K @ X0 + (I - K) @ m
    C = (I - K) @ C @ (I - K)
    return m, C


def _run(t_T, j, r, n, eta=None, key=0):
    x0 = jnp.broadcast_to(jnp.asarray(X0, jnp.float32).reshape(1, 2, 2, 1), (n, 2, 2, 1))
    keep = jnp.broadcast_to(jnp.asarray(KEEP, jnp.float32).reshape(1, 2, 2, 1), (n, 2, 2, 1))
    out = inpaint(gauss_eps, x0, keep, jax.random.key(key), betas=BETAS, t_T=t_T, jump_length=j,
                  jump_n_sample=r, clip=False, eta=eta)
    return np.asarray(out, np.float64).reshape(n, D_PIX)


@pytest.mark.parametrize("t_T,j,r,eta", [(10, 2, 3, None), (20, 5, 2, None), (10, 3, 2, 0.5)])
def test_output_law_matches_exact_repaint(t_T, j, r, eta):
    n = 80000
    s = _run(t_T, j, r, n, eta)
    m, C = exact_law(t_T, j, r, eta)
    np.testing.assert_array_equal(s[:, [0, 3]], np.broadcast_to(X0[[0, 3]], (n, 2)).astype(np.float32))
    se = np.sqrt(np.diag(C) / n)
    np.testing.assert_array_less(np.abs(s.mean(0) - m), 5 * se + 1e-6)
    emp = np.cov(s.T)
    cov_tol = 5 * np.sqrt(2 / n) * C[1:3, 1:3].max()
    np.testing.assert_allclose(emp[1:3, 1:3], C[1:3, 1:3], atol=cov_tol, rtol=0.02)
    # the test can tell schedules apart: the law without resampling would fail these tolerances
    m1, C1 = exact_law(t_T, j, 1, eta)
    assert np.any(np.abs(m1 - m) > 5 * se + 1e-6) or np.any(np.abs(C1 - C)[1:3, 1:3] > cov_tol + 0.02 * np.abs(C[1:3, 1:3]))


def test_all_known_returns_input_and_shapes():
    x0 = jax.random.uniform(jax.random.key(3), (3, 4, 4, 3), minval=-1, maxval=1)
    keep = jnp.ones((3, 4, 4))
    out = inpaint(lambda x, t: 0.0 * x, x0, keep, jax.random.key(0), betas=BETAS, t_T=10, jump_length=2, jump_n_sample=2)
    assert out.shape == x0.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, x0)
    many = inpaint(lambda x, t: 0.0 * x, x0, keep * 0, jax.random.key(0), betas=BETAS, t_T=10, jump_length=2,
                   jump_n_sample=2, n_draws=2)
    assert many.shape == (3, 2, 4, 4, 3) and not np.allclose(many[:, 0], many[:, 1])


def test_deterministic_per_example_keys_and_single_trace():
    eps = chex.assert_max_traces(lambda p, x, t: p["w"] * x, n=1)
    x0 = jax.random.uniform(jax.random.key(1), (3, 2, 2, 1), minval=-1, maxval=1)
    keep = jnp.zeros((3, 2, 2, 1)).at[:, 0].set(1)
    keys = jax.random.split(jax.random.key(7), 3)
    kw = dict(betas=BETAS, t_T=10, jump_length=2, jump_n_sample=2, params={"w": jnp.float32(0.2)})
    a = inpaint(eps, x0, keep, keys, **kw)
    b = inpaint(eps, x0, keep, keys, **kw)
    np.testing.assert_array_equal(a, b)
    # an example's result does not depend on its batch-mates (same shape -> no retrace)
    c = inpaint(eps, x0[::-1], keep, keys[::-1], **kw)
    np.testing.assert_allclose(c[::-1], a, atol=1e-6)
    kw["params"] = {"w": jnp.float32(0.3)}  # new weights are arguments, not constants: no retrace
    inpaint(eps, x0, keep, keys, **kw)
    with pytest.raises(ValueError, match="key"):
        inpaint(eps, x0, keep, keys[:2], **kw)
    with pytest.raises(ValueError, match="keep_mask"):
        inpaint(eps, x0, keep[:, :1], keys, **kw)


def test_one_trace_serves_every_schedule():
    """The schedule is data: t_T and the jump settings change the tables, not the program."""
    eps = chex.assert_max_traces(lambda p, x, t: p["w"] * x, n=1)
    x0 = jax.random.uniform(jax.random.key(2), (2, 2, 2, 1), minval=-1, maxval=1)
    keep = jnp.zeros((2, 2, 2, 1)).at[:, 0].set(1)
    outs = [inpaint(eps, x0, keep, jax.random.key(0), betas=BETAS, t_T=s[0], jump_length=s[1], jump_n_sample=s[2],
                    params={"w": jnp.float32(0.2)}) for s in ((10, 2, 2), (4, 1, 1), (20, 5, 3), (20, 1, 1))]
    assert all(bool(jnp.all(jnp.isfinite(o))) for o in outs)
    assert not np.allclose(outs[0], outs[1])  # a different schedule, a different draw of the sampler
    # more calls than one bucket holds: a bigger bucket, a second program, the same answer as before
    from ibo_jax.repaint.sampler import MIN_BUCKET, _bucket

    assert _bucket(1) == _bucket(MIN_BUCKET) == MIN_BUCKET and _bucket(MIN_BUCKET + 1) == 2 * MIN_BUCKET


def test_bf16_network_close_to_fp32():
    x0 = jnp.broadcast_to(jnp.asarray(X0, jnp.float32).reshape(1, 2, 2, 1), (64, 2, 2, 1))
    keep = jnp.broadcast_to(jnp.asarray(KEEP, jnp.float32).reshape(1, 2, 2, 1), (64, 2, 2, 1))
    kw = dict(betas=BETAS, t_T=10, jump_length=2, jump_n_sample=2, clip=False)
    f32 = inpaint(gauss_eps, x0, keep, jax.random.key(0), **kw)
    b16 = inpaint(gauss_eps, x0, keep, jax.random.key(0), compute_dtype=jnp.bfloat16, **kw)
    assert b16.dtype == jnp.float32
    assert float(jnp.abs(f32 - b16).max()) < 0.1


def test_sharded_over_forced_host_devices_matches_one_device(tmp_path):
    code = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        from ibo_jax.parallel import make_mesh
        from ibo_jax.repaint.sampler import inpaint
        assert len(jax.devices()) == 2
        x0 = jax.random.uniform(jax.random.key(1), (3, 4, 4, 3), minval=-1, maxval=1)
        keep = jnp.zeros((3, 4, 4, 1)).at[:, :2].set(1)
        kw = dict(betas=np.linspace(0.01, 0.3, 20), t_T=10, jump_length=2, jump_n_sample=2)
        eps = lambda x, t: 0.3 * x
        two = inpaint(eps, x0, keep, jax.random.key(0), **kw)
        one = inpaint(eps, x0, keep, jax.random.key(0), mesh=make_mesh(jax.devices()[:1]), **kw)
        np.testing.assert_allclose(two, one, atol=1e-6)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "OK" in res.stdout, res.stderr[-2000:]


class _TinyEps:
    """A stand-in EpsModel: apply(params, x_t, t) -> eps, params, betas, image_size."""

    def __init__(self, size):
        self.params = {"w": jnp.float32(0.2)}
        self.betas = np.linspace(0.01, 0.3, 20).astype(np.float32)
        self.image_size = size

    @staticmethod
    def apply(params, x, t):
        return params["w"] * x


def test_ibo_strategy_chunks_keys_and_resizing():
    from ibo_jax.occlusion.ibo import ibo

    images = jax.random.uniform(jax.random.key(0), (5, 6, 6, 3))
    remove = jnp.zeros((5, 6, 6), bool).at[:, 2:4, 1:5].set(True)
    keys = jax.random.split(jax.random.key(1), 5)
    kw = dict(key=keys, eps_model=_TinyEps(6), t_T=6, jump_length=2, jump_n_sample=2)
    stats = {}
    a = ibo(images, remove, batch_size=2, stats=stats, **kw)
    b = ibo(images, remove, batch_size=5, **kw)
    assert a.shape == images.shape and stats["inpaintings"] == 5
    np.testing.assert_allclose(a, b, atol=1e-6)  # chunking does not change a draw
    np.testing.assert_array_equal(np.where(remove[..., None], 0, a), np.where(remove[..., None], 0, images))
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not np.allclose(a, images)
    small = ibo(images, remove, batch_size=5, **(kw | {"eps_model": _TinyEps(4), "n_draws": 2}))
    assert small.shape == (5, 2, 6, 6, 3)
    np.testing.assert_array_equal(np.where(remove[:, None, ..., None], 0, small),
                                  np.where(remove[:, None, ..., None], 0, jnp.repeat(images[:, None], 2, 1)))
    with pytest.raises(ValueError, match="eps_model"):
        ibo(images, remove, key=keys)


def _gaussian_problem(n: int = 2000):
    """Correlated Gaussian 'images' (4x4x1) with the analytic eps, half the pixels known: the
    exact conditional of the unknown ones is known in closed form."""
    import jax.numpy as jnp

    from ibo_jax.repaint import diffusion as D

    H = W = 4
    P = H * W
    yy, xx = np.mgrid[:H, :W]
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    sigma = 0.1 * np.exp(-((d / 2.5) ** 2)) + 1e-3 * np.eye(P)
    T = 200
    betas = D.beta_schedule("linear", T, 1e-4, 0.05)
    abar = np.cumprod(1 - betas)
    # E[eps | x_t] = sqrt(1 - abar) (abar Sigma + (1 - abar) I)^-1 x_t: the Bayes-optimal eps network
    A = jnp.asarray(np.stack([np.sqrt(1 - abar[t]) * np.linalg.inv(abar[t] * sigma + (1 - abar[t]) * np.eye(P))
                              for t in range(T)]).astype(np.float32))

    def eps_fn(x, t):
        return jnp.einsum("bij,bj->bi", A[t], x.reshape(x.shape[0], P)).reshape(x.shape)

    x0 = np.random.default_rng(0).multivariate_normal(np.zeros(P), sigma).astype(np.float32)
    known = np.zeros(P, bool)
    known[::2] = True
    s_uk, s_kk = sigma[~known][:, known], sigma[known][:, known]
    mu = s_uk @ np.linalg.solve(s_kk, x0[known])
    cov = sigma[~known][:, ~known] - s_uk @ np.linalg.solve(s_kk, s_uk.T)
    batch = (np.repeat(x0[None], n, 0).reshape(n, H, W, 1),
             np.repeat(known.reshape(1, H, W, 1).astype(np.float32), n, 0))
    blind = (np.abs(mu).max(), np.abs(sigma[~known][:, ~known] - cov).max())  # a sampler ignoring the known pixels
    return eps_fn, betas, batch, known, mu, cov, blind


@pytest.mark.parametrize("sampler, sched", [("repaint", (50, 5, 5)), ("ddim_repaint", (50, 5, 5)),
                                            ("ddnm", (50, 1, 1)), ("ddnm", (20, 3, 3))])
def test_samplers_approach_the_exact_gaussian_conditional(sampler, sched):
    from ibo_jax import repaint

    eps_fn, betas, (x0, keep), known, mu, cov, blind = _gaussian_problem()
    out = np.asarray(repaint.inpaint(eps_fn, x0, keep, jax.random.key(1), betas=betas, t_T=sched[0],
                                     jump_length=sched[1], jump_n_sample=sched[2], sampler=sampler))
    u = out.reshape(len(out), -1)[:, ~known]
    mean_err, cov_err = np.abs(u.mean(0) - mu).max(), np.abs(np.cov(u.T) - cov).max()
    assert mean_err < 0.4 * blind[0] and cov_err < 0.2 * blind[1], (mean_err, cov_err, blind)
    np.testing.assert_array_equal(out.reshape(len(out), -1)[:, known], x0.reshape(len(x0), -1)[:, known])
    assert repaint.network_calls(sampler, *sched) == repaint.schedule_cost(*sched).unet_calls


@pytest.mark.parametrize("sched", [(200, 1, 1), (50, 5, 2)])
def test_ddim_repaint_with_eta_1_is_repaint(sched):
    """eta = 1 with eps re-derived from the clipped x0 is the DDPM posterior step: the same
    samples as RePaint's ancestral steps for the same keys, up to float rounding."""
    from ibo_jax import repaint

    eps_fn, betas, (x0, keep), *_ = _gaussian_problem(n=64)
    kw = dict(betas=betas, t_T=sched[0], jump_length=sched[1], jump_n_sample=sched[2])
    a = np.asarray(repaint.inpaint(eps_fn, x0, keep, jax.random.key(3), sampler="repaint", **kw))
    b = np.asarray(repaint.inpaint(eps_fn, x0, keep, jax.random.key(3), sampler="ddim_repaint", eta=1.0, **kw))
    assert np.abs(a - b).max() < 1e-4
    with pytest.raises(ValueError, match="sampler 'ddrm' unknown"):
        repaint.inpaint(eps_fn, x0, keep, jax.random.key(3), sampler="ddrm", **kw)
