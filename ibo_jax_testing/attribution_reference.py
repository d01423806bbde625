"""captum 0.9.0 as the reference for `ibo_jax.attribution.gradients`: a torch twin of
`models.resnet_small` (same weights, normalization inside, input NHWC-in-[0, 1] like ours) and
captum runners returning channels-last numpy arrays.

Used by tests/test_attribution.py and benchmarks/attribution_throughput.py; needs torch and captum.
"""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx
from torch import nn

from ibo_jax.models.convert import to_torchvision_state_dict
from ibo_jax_testing.reference import BasicBlock


class TorchResNetSmall(nn.Module):
    """`models.resnet_small`'s module tree in torch (3x3 stem, no pool, BasicBlocks), taking
    [B, 3, H, W] images in [0, 1] and normalizing inside as the NNX model does."""

    def __init__(self, widths=(16, 32, 64), layers=(1, 1, 1), strides=(2, 2, 2), num_classes=2,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin, self.stages = widths[0], []
        for i, (w, n, s) in enumerate(zip(widths, layers, strides, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, s if j == 0 else 1))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            self.stages.append(f"layer{i + 1}")
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))


def randomize_batchnorm(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """Random BatchNorm statistics and affine parameters, in place (a fresh model's are 0/1, which
    would make every BatchNorm an identity and hide layout mistakes); returns the model."""
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model)):
        leaf = str(path[-1])
        if not any(str(p).startswith(("bn", "downsample_bn")) for p in path[:-1]):
            continue
        n = var[...].shape
        value = {"scale": 0.5 + 0.5 * rng.random(n), "bias": 0.2 * rng.standard_normal(n),
                 "mean": 0.2 * rng.standard_normal(n), "var": 0.5 + rng.random(n)}.get(leaf)
        if value is not None:
            var[...] = np.asarray(value, np.float32)
    return model


def twin(model: nnx.Module, *, widths, layers=(1, 1, 1), strides=(2, 2, 2), dtype=torch.float64) -> TorchResNetSmall:
    """The torch twin of an NNX `resnet_small(widths=..., layers=..., strides=...)`, eval mode."""
    t = TorchResNetSmall(widths, layers, strides, model.num_classes)
    sd = {k: torch.from_numpy(v) for k, v in to_torchvision_state_dict("resnet18", model).items()}
    missing, unexpected = t.load_state_dict(sd, strict=False)
    if unexpected or any("num_batches" not in k for k in missing):
        raise ValueError(f"twin: missing {missing}, unexpected {unexpected}")
    return t.to(dtype).eval()


def to_nchw(images: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))).to(dtype)


def to_nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().transpose(0, 2, 3, 1)


def captum_raw(name: str, tmodel: nn.Module, images: np.ndarray, target: int, **kw) -> np.ndarray:
    """captum's attribution [B, H, W, 3] for one of our gradient methods (images NHWC in [0, 1]).

    'smoothgrad' takes `noise` [S, B, H, W, 3] and returns the mean of captum `Saliency` over the
    noisy copies (kw `abs` as Saliency's); captum's NoiseTunnel draws its own noise inside.
    """
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    dtype = next(tmodel.parameters()).dtype
    x = to_nchw(images, dtype)
    if name == "saliency":
        return to_nhwc(Saliency(tmodel).attribute(x, target=target, **kw))
    if name == "input_x_gradient":
        return to_nhwc(InputXGradient(tmodel).attribute(x, target=target, **kw))
    if name == "integrated_gradients":
        if isinstance(kw.get("baselines"), np.ndarray):
            kw["baselines"] = to_nchw(kw["baselines"], dtype)
        return to_nhwc(IntegratedGradients(tmodel).attribute(x, target=target, **kw))
    if name == "smoothgrad":
        noise = kw.pop("noise")
        sal = Saliency(tmodel)
        return np.mean([to_nhwc(sal.attribute(x + to_nchw(eps, dtype), target=target, **kw)) for eps in noise], axis=0)
    raise ValueError(f"name: expected a gradient method, got {name!r}")
