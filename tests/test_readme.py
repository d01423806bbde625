"""The README's python blocks run as written, on tiny stand-ins for the heavy parts.

Three names the README uses are swapped for tiny versions with `monkeypatch.setattr`, which
raises if the name does not exist: a renamed or removed function in the README fails here.
- `models.resnet50` -> the demo's small ResNet (the block's code path is the same);
- `models.loaders.load_eps_model` -> a toy epsilon model (no trained DDPM on disk);
- `models.from_timm` -> a tiny random ViT at 224 px (no foundation-model checkpoint on disk).
Everything else (data, cam, evaluation, occlusion, repaint) is the real library, on two 64 px
synthetic patches (the smallest the generator makes).
"""

from __future__ import annotations

import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_a_python_block_within_15_lines():
    blocks = python_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    assert all(len(b.splitlines()) <= 15 for b in blocks)


def test_readme_at_most_150_lines():
    assert len(README.read_text().splitlines()) <= 150


def test_readme_python_blocks_run(monkeypatch):
    from ibo_jax import models
    from ibo_jax.models import loaders

    monkeypatch.setattr(models, "resnet50", lambda num_classes=2, rngs=None, **kw: models.resnet_small(
        num_classes=num_classes, rngs=rngs))

    def toy_eps(path, *args, **kwargs):
        return loaders.EpsModel(apply=lambda params, x, t: params["a"] * x, params={"a": jnp.float32(0.5)},
                                betas=np.linspace(1e-4, 0.02, 50, dtype=np.float32), image_size=64)

    monkeypatch.setattr(loaders, "load_eps_model", toy_eps)
    # no foundation-model checkpoint on disk: a tiny random ViT at 224 px in the timm layout
    monkeypatch.setattr(models, "from_timm", lambda preset, path, num_classes=None, **kw: models.vit(
        "tiny", img_size=224, patch_size=32, num_classes=num_classes or 2))

    for block in python_blocks(README.read_text()):
        namespace: dict = {"__name__": "readme"}
        exec(compile(block, "README.md python block", "exec"), namespace)
        if "auc" in namespace:
            auc = np.asarray(namespace["auc"])
            assert auc.shape == (2,)
            probs = np.asarray(namespace["probs"])
            assert probs.shape == (2, 5) and np.all((probs >= 0) & (probs <= 1))
        if "vit" in namespace:
            heat = np.asarray(namespace["heat"])
            assert heat.shape == (2, 224, 224) and heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
