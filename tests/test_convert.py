"""Weight import: torchvision-layout torch models (plain torch, random weights and BN statistics)
imported with `from_torchvision` give the same logits; file formats; heads; clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ibo_jax import models
from ibo_jax.models.convert import to_torchvision_state_dict


def _torch_vgg16(num_classes: int, hidden: int):
    import torch.nn as nn

    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(nn.Linear(512 * 49, hidden), nn.ReLU(), nn.Dropout(),
                                            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
                                            nn.Linear(hidden, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG()


def _randomize(net, seed: int = 0):
    """Random weights and BatchNorm statistics, eval mode."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("weight") and t.ndim == 1:  # BN gamma
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
    return net.eval()


def _compare(net, model, hw: int, seed: int = 1):
    import torch

    x = np.random.default_rng(seed).random((2, hw, hw, 3), dtype=np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).copy())).numpy()
    got = np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(x)))
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    return rel, got, ref


@pytest.fixture(scope="module")
def resnet50_sd():
    from ibo_jax_testing.reference import (
        randomized_resnet,  # the plain-torch torchvision-layout ResNet
    )

    net = randomized_resnet("resnet50", 5, seed=0, target_bias=0.0)
    return net, {k: v.numpy() for k, v in net.state_dict().items()}


@pytest.mark.interop
def test_resnet50_parity_and_formats(resnet50_sd, tmp_path):
    import torch

    net, sd = resnet50_sd
    model = models.from_torchvision("resnet50", net.state_dict(), num_classes=5)
    rel, _, _ = _compare(net, model, 64)
    assert rel <= 1e-4, rel
    # .pth, .npz and .safetensors load the same tensors
    torch.save(net.state_dict(), tmp_path / "w.pth")
    np.savez(tmp_path / "w.npz", **sd)
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items() if "num_batches" not in k}, str(tmp_path / "w.safetensors"))
    ref = jax.tree.leaves(nnx_state(model))
    for f in ("w.pth", "w.npz", "w.safetensors"):
        m = models.from_torchvision("resnet50", tmp_path / f)
        assert m.num_classes == 5
        for a, b in zip(ref, jax.tree.leaves(nnx_state(m)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the inverse map round-trips
    back = to_torchvision_state_dict("resnet50", model)
    assert set(back) == {k for k in sd if "num_batches" not in k}
    np.testing.assert_allclose(back["layer2.0.downsample.0.weight"], sd["layer2.0.downsample.0.weight"])


def nnx_state(model):
    from flax import nnx

    return nnx.state(model)


@pytest.mark.interop
def test_timm_naming_new_head_and_errors(resnet50_sd):
    _, sd = resnet50_sd
    timm_sd = {"model." + k: v for k, v in sd.items()}  # timm ResNet names + a wrapper prefix
    m = models.from_torchvision("resnet50", timm_sd, num_classes=5, naming="timm")
    np.testing.assert_array_equal(np.asarray(m.bn1.mean[...]), sd["bn1.running_mean"])
    m2 = models.from_torchvision("resnet50", sd, num_classes=2)  # new head, trunk kept
    assert m2.fc.kernel.shape == (2048, 2)
    np.testing.assert_allclose(np.asarray(m2.conv1.kernel[...]), sd["conv1.weight"].transpose(2, 3, 1, 0))
    missing = {k: v for k, v in sd.items() if k != "layer3.2.bn2.running_var"}
    with pytest.raises(ValueError, match=r"missing tensor 'layer3.2.bn2.running_var'"):
        models.from_torchvision("resnet50", missing)
    bad = dict(sd, **{"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"'layer1.0.conv2.weight' has shape \(64, 64, 1, 1\).*\(64, 64, 3, 3\)"):
        models.from_torchvision("resnet50", bad)
    extra = dict(sd, **{"layer5.0.conv1.weight": np.zeros((1,), np.float32)})
    with pytest.raises(ValueError, match=r"unexpected tensor 'layer5.0.conv1.weight'"):
        models.from_torchvision("resnet50", extra)
    with pytest.raises(ValueError, match=r"missing tensor '(classifier|features)\.0\..*is this a vgg16"):
        models.from_torchvision("vgg16", sd, num_classes=2, hidden=16)  # a ResNet checkpoint for VGG


@pytest.mark.interop
def test_vgg16_parity():
    net = _randomize(_torch_vgg16(3, hidden=16))
    model = models.from_torchvision("vgg16", net.state_dict())
    assert model.classifier[0].kernel.shape == (512 * 49, 16)
    rel, _, _ = _compare(net, model, 32)
    assert rel <= 1e-4, rel


def test_npz_without_torch_and_bad_suffix(tmp_path):
    m = models.resnet18(3)
    sd = to_torchvision_state_dict("resnet18", m)
    np.savez(tmp_path / "r18.npz", **sd)
    m2 = models.from_torchvision("resnet18", tmp_path / "r18.npz")
    np.testing.assert_array_equal(np.asarray(m.layer4[1].conv2.kernel[...]), np.asarray(m2.layer4[1].conv2.kernel[...]))
    (tmp_path / "w.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="expected .pth"):
        models.from_torchvision("resnet18", tmp_path / "w.h5")
    with pytest.raises(ValueError, match="name: expected one of"):
        models.from_torchvision("resnet9", sd)
