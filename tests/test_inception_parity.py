"""Parity of the NNX InceptionV3 with a torchvision-layout Inception3 written in plain torch (fp32).

torchvision cannot be installed beside the CPU torch, so the reference network is rebuilt here with
torchvision's module and parameter names (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.
running_mean`, ..., `fc.weight`), transform_input=False and no auxiliary head. Conv/linear weights,
BatchNorm affine parameters and running statistics are all random (non-zero BN biases), the model is
in eval mode, and the weights go through `ibo_jax.models.from_torchvision`. Two 75x75 images (the
smallest input the network accepts) keep the run short on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.interop, pytest.mark.slow]
torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

TOL = 1e-4
SIZE = 75
NUM_CLASSES = 5
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class _ConvBN(nn.Module):
    """torchvision's BasicConv2d: bias-free conv, BatchNorm(eps=1e-3), ReLU."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def _chain(x, *mods):
    for m in mods:
        x = m(x)
    return x


def _avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1)  # count_include_pad=True (torch's default)


class _A(nn.Module):
    def __init__(self, cin, pool_ch):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 64, 1)
        self.branch5x5_1 = _ConvBN(cin, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(cin, pool_ch, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch5x5_1, self.branch5x5_2),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_avg3(x)),
        ], dim=1)


class _B(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = _ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class _C(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 192, 1)
        self.branch7x7_1 = _ConvBN(cin, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                   self.branch7x7dbl_5),
            self.branch_pool(_avg3(x)),
        ], dim=1)


class _D(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = _ConvBN(cin, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            _chain(x, self.branch3x3_1, self.branch3x3_2),
            _chain(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class _E(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = _ConvBN(cin, 320, 1)
        self.branch3x3_1 = _ConvBN(cin, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(cin, 192, 1)

    def forward(self, x):
        b = self.branch3x3_1(x)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b), self.branch3x3_2b(b),
            self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c),
            self.branch_pool(_avg3(x)),
        ], dim=1)


class TorchInception3(nn.Module):
    """torchvision's Inception3(aux_logits=False, transform_input=False) layout, eval semantics."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b = _A(192, 32)
        self.Mixed_5c = _A(256, 64)
        self.Mixed_5d = _A(288, 64)
        self.Mixed_6a = _B(288)
        self.Mixed_6b = _C(768, 128)
        self.Mixed_6c = _C(768, 160)
        self.Mixed_6d = _C(768, 160)
        self.Mixed_6e = _C(768, 192)
        self.Mixed_7a = _D(768)
        self.Mixed_7b = _E(1280)
        self.Mixed_7c = _E(2048)
        self.fc = nn.Linear(2048, num_classes)

    def trunk(self, x):  # normalized NCHW -> Mixed_7c output
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        x = _chain(x, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = F.max_pool2d(x, 3, stride=2)
        return _chain(x, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)

    def forward(self, x):
        a = self.trunk(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(a, 1), 1)), a


def _randomized(num_classes: int, seed: int = 0) -> TorchInception3:
    """Random conv/fc weights (He-scaled so activations stay O(1)) and random BN stats/affine."""
    torch.manual_seed(seed)
    model = TorchInception3(num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.fixture(scope="module")
def outputs():
    from ibo_jax.models import from_torchvision

    tmodel = _randomized(NUM_CLASSES)
    sd = {k: v.detach().numpy().copy() for k, v in tmodel.state_dict().items()}
    assert any(k.endswith("bn.bias") and np.abs(v).max() > 0.05 for k, v in sd.items())
    jmodel = from_torchvision("inception_v3", sd, num_classes=NUM_CLASSES)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, SIZE, SIZE, 3)).astype(np.float32)  # RGB in [0, 1], NHWC
    xn = np.transpose((x - MEAN) / STD, (0, 3, 1, 2))  # what torchvision gets: normalized NCHW
    with torch.no_grad():
        t_logits, t_feat = tmodel(torch.from_numpy(np.ascontiguousarray(xn)))
    j_feat = np.asarray(jmodel.features(x))
    j_logits = np.asarray(jmodel(x))
    return dict(t_logits=t_logits.numpy(), t_feat=t_feat.numpy().transpose(0, 2, 3, 1),
                j_logits=j_logits, j_feat=j_feat)


def test_logits_match_torchvision_layout(outputs):
    t, j = outputs["t_logits"], outputs["j_logits"]
    assert j.shape == t.shape == (2, NUM_CLASSES)
    assert np.abs(t).max() > 1e-2  # a non-degenerate reference
    rel = _rel(j, t)
    print(f"inception_v3 logits max rel error: {rel:.3e}")
    assert rel <= TOL


def test_features_match_mixed_7c(outputs):
    t, j = outputs["t_feat"], outputs["j_feat"]
    assert j.shape == t.shape and j.shape[-1] == 2048
    assert (t > 0).mean() > 0.05  # ReLU outputs, not all dead
    rel = _rel(j, t)
    print(f"inception_v3 Mixed_7c max rel error: {rel:.3e}")
    assert rel <= TOL
