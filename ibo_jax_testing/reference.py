"""pytorch-grad-cam 1.5.7 as a reference: plain-torch torchvision-layout ResNet18/50 and a runner.

Used by the parity tests and `benchmarks/cam_throughput.py --reference`; needs the `interop`
extra (torch, grad-cam installed --no-deps, opencv, ttach). torchvision cannot be installed beside
the CPU torch here and the CAM methods never use it, so `install_torchvision_stub()` registers a
minimal stand-in before pytorch-grad-cam is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import numpy as np
import torch
from torch import nn

from ibo_jax.models.base import IMAGENET_MEAN, IMAGENET_STD

REFERENCE_CLASSES = {
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
    "ablationcam": "AblationCAM", "fullgrad": "FullGrad", "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM", "hirescam": "HiResCAM", "layercam": "LayerCAM",
}


class _Placeholder(type):
    """Stand-in classes: any attribute is another stand-in (enums such as InterpolationMode.BILINEAR
    work as dict keys); instantiating or calling one raises."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__name__}.{name}")

    def __call__(cls, *_a, **_k):
        raise NotImplementedError(f"torchvision stand-in: {cls.__name__} is not available here")


_PLACEHOLDERS: dict[str, type] = {}


def _placeholder(name: str) -> type:
    if name not in _PLACEHOLDERS:
        _PLACEHOLDERS[name] = _Placeholder(name, (), {})
    return _PLACEHOLDERS[name]


class _StubModule(types.ModuleType):
    """A torchvision (sub)package whose every missing name is a stand-in class."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Creates any `<root>.*` submodule on import (timm imports several of torchvision's)."""

    def __init__(self, root: str):
        self.root, self.installing = root, False

    def find_spec(self, fullname, path=None, target=None):
        # Only while installing, or below an installed stand-in root: once a test fixture drops
        # the stand-in from sys.modules, find_spec(root) is None again (nothing leaks).
        active = self.installing or isinstance(sys.modules.get(self.root), _StubModule)
        if active and (fullname == self.root or fullname.startswith(self.root + ".")):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _StubModule(spec.name)
        mod.__path__ = []
        return mod

    def exec_module(self, module):
        if module.__name__ == self.root:
            module.__version__ = "0.0+stand-in"


def install_stub_package(root: str) -> None:
    """Imports a stand-in package `root` (every submodule imports; its names raise when used); its
    finder is appended to sys.meta_path, so an installed real package still wins."""
    finder = next((f for f in sys.meta_path if isinstance(f, _StubFinder) and f.root == root), None)
    if finder is None:
        finder = _StubFinder(root)
        sys.meta_path.append(finder)
    finder.installing = True
    try:
        importlib.import_module(root)
    finally:
        finder.installing = False


def install_torchvision_stub() -> None:
    """Registers a stand-in `torchvision`: enough for pytorch-grad-cam and for `import timm` (every
    `torchvision.*` module imports; its names are classes that raise when used). Neither uses
    torchvision for the models and methods the tests compare."""
    if "torchvision" in sys.modules:
        return  # a real one, or the stand-in already
    install_stub_package("torchvision")


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


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


LAYOUTS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


class TorchResNet(nn.Module):
    """torchvision.models.resnet18/50's module tree and forward (same state_dict keys)."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 2):
        super().__init__()
        block, counts = LAYOUTS[arch]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, layers = 64, []
        for width, n, stride in zip((64, 128, 256, 512), counts, (1, 2, 2, 2), strict=True):
            blocks = []
            for i in range(n):
                blocks.append(block(cin, width, stride if i == 0 else 1))
                cin = width * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomized_resnet(arch: str = "resnet50", num_classes: int = 2, *, seed: int = 0, target: int = 1,
                      target_bias: float = 5.0) -> TorchResNet:
    """Random weights and randomized BatchNorm statistics/affine (fresh BN biases are all zero,
    which would hide FullGrad bugs); `target_bias` is added to the target logit so it is positive."""
    torch.manual_seed(seed)
    model = TorchResNet(arch, num_classes)
    g = torch.Generator().manual_seed(seed + 1)
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
        model.fc.bias[target] += target_bias
    return model.eval()


def state_dict_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if "num_batches" not in k}


def to_torch_input(images: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[B, H, W, 3] in [0, 1] -> normalized NCHW tensor (what pytorch-grad-cam is given); float64
    images stay float64 when `dtype` is torch.float64."""
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    xn = (np.asarray(images, np_dtype) - IMAGENET_MEAN.astype(np_dtype)) / IMAGENET_STD.astype(np_dtype)
    return torch.from_numpy(np.ascontiguousarray(xn.transpose(0, 3, 1, 2))).to(dtype)


def make_reference(method: str, model: nn.Module, *, batch_size: int = 64):
    """The pytorch-grad-cam explainer for `method` on `model.layer4[-1]`."""
    install_torchvision_stub()
    import pytorch_grad_cam as pgc

    explainer = getattr(pgc, REFERENCE_CLASSES[method])(model=model, target_layers=[model.layer4[-1]])
    if method in ("scorecam", "ablationcam"):
        explainer.batch_size = batch_size
    return explainer


def reference_cam(method: str, model: nn.Module, images: np.ndarray, target_class: int = 1,
                  *, batch_size: int = 64) -> np.ndarray:
    """pytorch-grad-cam's maps [B, H, W] for images [B, H, W, 3] in [0, 1]."""
    install_torchvision_stub()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    explainer = make_reference(method, model, batch_size=batch_size)
    dtype = next(model.parameters()).dtype  # a model.double() gets float64 inputs
    with explainer:
        return explainer(input_tensor=to_torch_input(images, dtype),
                         targets=[ClassifierOutputTarget(target_class)] * len(images))


def randomized_resnet50(num_classes: int = 2, **kw) -> TorchResNet:
    return randomized_resnet("resnet50", num_classes, **kw)
