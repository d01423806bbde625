"""Attributions beyond CAM, with the CAMs, behind one entry point.

    heat = attribution.compute("integrated_gradients", model, images, target_class=1, n_steps=50)
    raw = attribution.compute("integrated_gradients", model, images, target_class=1, raw=True)
    heat = attribution.compute("gradcam", model, images)            # delegates to cam.compute

Maps are [B, H, W] float32 in [0, 1] on the image grid (like CAMs); `raw=True` gives the raw
[B, H, W, 3] attribution w.r.t. the [0, 1] image where a method has one (captum's convention).
`attribution.supports(name, model)` says whether a method applies to a model's family ('cnn' or
'vit', `attribution.family(model)`). Gradient methods: `attribution.gradients`; attention and LRP
methods for ViTs: `attribution.transformer` (when present, see below).
"""

import importlib.util

from ibo_jax import cam
from ibo_jax.attribution import gradients  # noqa: F401  (registration side effect)
from ibo_jax.attribution.base import (
    REDUCTIONS,
    REGISTRY,
    compute,
    family,
    has_raw,
    make_fn,
    reduce_channels,
    register,
    supports,
    to_unit,
)

# rollout, grad_rollout, attnlrp, cp_lrp (the transformer helper's module): imported when the file
# exists (errors inside it propagate); make this import unconditional once it is merged
if importlib.util.find_spec("ibo_jax.attribution.transformer") is not None:
    from ibo_jax.attribution import transformer  # noqa: F401  (registration side effect)

_ORDER = ("rollout", "grad_rollout", "attnlrp", "cp_lrp", "saliency", "input_x_gradient",
          "integrated_gradients", "smoothgrad")
EXTRA: tuple[str, ...] = tuple(n for n in _ORDER if n in REGISTRY) + tuple(
    sorted(n for n in REGISTRY if n not in _ORDER))
METHODS: tuple[str, ...] = cam.METHODS + cam.EXTRA_METHODS + EXTRA

__all__ = [
    "EXTRA", "METHODS", "REDUCTIONS", "REGISTRY", "compute", "family", "has_raw", "make_fn",
    "reduce_channels", "register", "supports", "to_unit",
]
