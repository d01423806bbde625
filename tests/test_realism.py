"""Realism metrics: SSIM/PSNR against a scipy reference, KID, classifier features, NNX LPIPS."""

import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ibo_jax import evaluation
from ibo_jax.models import lpips as lp


def _ssim_reference(a, b):
    from scipy.ndimage import gaussian_filter

    def f(x):  # radius int(3.5 * 1.5 + 0.5) = 5: an 11-tap window; crop the border = valid
        return gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")[5:-5, 5:-5]

    out = []
    for c in range(a.shape[-1]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        out.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(out)


def test_ssim_psnr_match_reference():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 24, 20, 3)).astype(np.float32)
    b = np.clip(a + 0.1 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    m = evaluation.pair_metrics(a, b)
    for i in range(2):
        assert m["ssim"][i] == pytest.approx(_ssim_reference(a[i], b[i]), abs=1e-4)
        mse = np.mean((a[i].astype(np.float64) - b[i]) ** 2)
        assert m["psnr"][i] == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    same = evaluation.pair_metrics(a, a)
    np.testing.assert_allclose(same["ssim"], 1, atol=1e-5)
    assert np.all(same["psnr"] == 100) and np.all(np.isinf(evaluation.psnr(a, a)))
    with pytest.raises(ValueError, match="equal"):
        evaluation.ssim(a, b[:, :10])


def test_kid_unbiased_and_separates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    y = rng.normal(size=(100, 8))
    z = rng.normal(size=(100, 8)) + 1.0
    same, diff = evaluation.kid(x, y), evaluation.kid(x, z)
    assert abs(same["kid"]) < 0.2 * diff["kid"]
    # brute-force unbiased MMD^2 on a small subset
    xs, ys = x[:6], z[:5]
    k = lambda u, v: (u @ v / 8 + 1) ** 3
    sxx = np.mean([k(xs[i], xs[j]) for i in range(6) for j in range(6) if i != j])
    syy = np.mean([k(ys[i], ys[j]) for i in range(5) for j in range(5) if i != j])
    sxy = np.mean([k(u, v) for u in xs for v in ys])
    assert evaluation.kid(xs, ys)["kid"] == pytest.approx(sxx + syy - 2 * sxy)
    sub = evaluation.kid(x, z, subset_size=50, n_subsets=10, seed=1)
    assert sub["n"] == 50 and sub["std"] > 0
    with pytest.raises(ValueError, match="D"):
        evaluation.kid(x, z[:, :3])


class _TinyClassifier(nnx.Module):
    def __init__(self):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0))

    def features(self, x, *, normalized=False):
        return nnx.relu(self.conv(x))  # [B, H, W, 4]


def test_feature_fn_pools_features():
    model = _TinyClassifier()
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 3)).astype(np.float32)
    fn = evaluation.make_feature_fn(model, batch_size=2)
    got = fn(x)
    want = np.asarray(jnp.mean(model.features(jnp.asarray(x)), axis=(1, 2)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lpips_unavailable_without_weights_and_checks_keys(tmp_path, monkeypatch):
    assert lp.load_lpips(None) is None
    # the heads: from a file (.npz here; lpips' alex.pth in use), never shipped in the repository
    want = {f"lin{i}": np.linspace(0, 1, c, dtype=np.float32) for i, c in enumerate(lp.CHANNELS)}
    np.savez(tmp_path / "heads.npz", **want)
    got = lp.read_heads(tmp_path / "heads.npz")
    assert all(np.array_equal(got[k], want[k]) for k in want)
    with pytest.raises(KeyError, match="heads.npz: no weights for head lin4"):
        np.savez(tmp_path / "heads.npz", **{k: v for k, v in want.items() if k != "lin4"})
        lp.read_heads(tmp_path / "heads.npz")
    with pytest.raises(KeyError, match="features.0.weight"):
        lp.load_lpips({"classifier.1.weight": np.zeros((4, 4))})
    with pytest.raises(FileNotFoundError, match="AlexNet"):
        lp.load_lpips(tmp_path / "missing.pth")
    monkeypatch.setattr(lp, "HEADS_IN_PACKAGE", ("no_such_lpips_package", "weights/v0.1/alex.pth"))
    with pytest.raises(FileNotFoundError, match="lpips package is not installed"):
        lp.read_heads(None)


def _torch_alexnet(torch):
    nn = torch.nn
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )
    return model


@pytest.mark.interop
def test_lpips_matches_torch_lpips(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    alex = _torch_alexnet(torch)
    tv = types.ModuleType("torchvision")
    tv_models = types.ModuleType("torchvision.models")
    tv_models.alexnet = lambda pretrained=False, **kw: alex
    tv.models = tv_models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv_models)
    lpips_torch = pytest.importorskip("lpips")
    ref = lpips_torch.LPIPS(net="alex", verbose=False).eval()

    path = tmp_path / "alexnet.pth"
    torch.save(alex.state_dict(), path)
    heads = lp.default_heads_path()  # the installed lpips package's alex.pth, the reference's own heads
    assert heads is not None and heads.name == "alex.pth"
    model = lp.load_lpips(path)
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 64, 64, 3)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.normal(size=a.shape), 0, 1).astype(np.float32)
    got = lp.make_lpips_fn(model, batch_size=2)(a, b)
    with torch.no_grad():
        to_t = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)
        want = ref(to_t(a), to_t(b), normalize=True).reshape(-1).numpy()
    assert want.min() > 1e-2  # a non-degenerate comparison (atol alone would pass distances near 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lp.make_lpips_fn(model)(a, b), got, rtol=1e-5)  # whatever the batch size


def test_lpips_j_vgg_only_with_hub():
    """lpips-j's VGG LPIPS downloads from the Hugging Face hub: skip cleanly when offline."""
    pytest.importorskip("lpips_j")
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        pytest.skip("HF_HUB_OFFLINE=1")
    try:
        socket.create_connection(("huggingface.co", 443), timeout=2).close()
    except OSError:
        pytest.skip("huggingface.co unreachable: lpips-j's VGG weights are not available offline")
    fn = lp.load_lpips_vgg()
    if fn is None:
        pytest.skip("lpips-j's VGG weights could not be fetched")
    x = np.zeros((1, 64, 64, 3), np.float32)
    assert float(fn(x, x)[0]) == pytest.approx(0, abs=1e-6)
