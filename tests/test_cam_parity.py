"""Parity of ibo_jax.cam with pytorch-grad-cam 1.5.7 on the same ResNet50 weights (fp32).

The torch model is a torchvision-layout ResNet50 written here in plain torch (torchvision cannot
be installed beside the CPU torch) with random weights and randomized BatchNorm statistics and
affine parameters (fresh BN biases are all zero, which would hide FullGrad bugs). It is imported
with `ibo_jax.models.from_torchvision`. pytorch-grad-cam imports torchvision at module level but
these methods never use it, so a minimal stand-in module is registered first.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

pytestmark = pytest.mark.interop
torch = pytest.importorskip("torch")
nn = torch.nn

TOL = 1e-3
TARGET = 1


def _install_torchvision_stub() -> None:
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")

    def _missing(*_a, **_k):
        raise NotImplementedError("torchvision stand-in: not available in this environment")

    for name in ("Compose", "Normalize", "ToTensor", "Resize"):
        setattr(transforms, name, _missing)
    functional.resize = _missing
    ops.box_iou = _missing
    transforms.functional = functional
    tv.transforms, tv.ops = transforms, ops
    sys.modules.update({
        "torchvision": tv, "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional, "torchvision.ops": ops,
    })


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchResNet50(nn.Module):
    """torchvision.models.resnet50's module tree and forward, without torchvision."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            blocks = []
            for i in range(n):
                blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                cin = width * 4
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomized_resnet50() -> nn.Module:
    torch.manual_seed(0)
    model = TorchResNet50(num_classes=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
        model.fc.bias[TARGET] += 5.0  # a positive target logit (Ablation-CAM divides by it)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    from ibo_jax.models import from_torchvision

    tmodel = _randomized_resnet50()
    state = {k: v.detach().numpy() for k, v in tmodel.state_dict().items() if "num_batches" not in k}
    jmodel = from_torchvision("resnet50", state, num_classes=2)
    return tmodel, jmodel


def _images(size: int, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(size)
    base = rng.uniform(size=(n, size // 8, size // 8, 3))
    return np.clip(np.kron(base, np.ones((1, 8, 8, 1))) + 0.1 * rng.normal(size=(n, size, size, 3)), 0, 1).astype(np.float32)


def _reference(method: str, tmodel, images: np.ndarray, **kw) -> np.ndarray:
    _install_torchvision_stub()
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {
        "gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
        "ablationcam": pgc.AblationCAM, "fullgrad": pgc.FullGrad, "scorecam": pgc.ScoreCAM,
        "eigencam": pgc.EigenCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM,
    }[method]
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    xn = torch.from_numpy(((images - mean) / std).transpose(0, 3, 1, 2).copy())
    with cls(model=tmodel, target_layers=[tmodel.layer4[-1]], **kw) as explainer:
        if hasattr(explainer, "batch_size"):
            explainer.batch_size = 64
        return explainer(input_tensor=xn, targets=[ClassifierOutputTarget(TARGET)] * len(images))


def test_logits_match(models):
    tmodel, jmodel = models
    x = _images(64)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).copy())).numpy()
    assert ref[:, TARGET].min() > 0
    np.testing.assert_allclose(np.asarray(jmodel(x)), ref, rtol=1e-3, atol=1e-3)


SIZES = {"scorecam": 64, "ablationcam": 64}


@pytest.mark.parametrize(
    "method",
    ["gradcam", "gradcam++", "xgradcam", "ablationcam", "fullgrad", "scorecam", "eigencam", "hirescam", "layercam"],
)
def test_parity_with_pytorch_grad_cam(models, method):
    from ibo_jax import cam

    tmodel, jmodel = models
    size = SIZES.get(method, 128)
    x = _images(size, n=1 if method in SIZES else 2)
    ref = _reference(method, tmodel, x)
    heat = np.asarray(cam.compute(method, jmodel, x, target_class=TARGET))
    assert ref.shape == heat.shape
    assert heat.max() > 0 and ref.max() > 0
    diff = float(np.abs(heat - ref).max())
    if method == "eigencam" and diff > TOL:  # parity up to the SVD sign (documented rule)
        from ibo_jax.cam.base import finalize_layer_cam
        from ibo_jax.cam.eigencam import first_component_projection

        acts = jmodel.features(x)
        flipped, _ = finalize_layer_cam(-first_component_projection(acts), x.shape[1:3])
        per_image = np.minimum(np.abs(heat - ref).max(axis=(1, 2)), np.abs(np.asarray(flipped) - ref).max(axis=(1, 2)))
        diff = float(per_image.max())
    print(f"{method}: max abs diff {diff:.2e} at {size}x{size}")
    assert diff <= TOL, f"{method}: max abs diff {diff:.3g} > {TOL}"
