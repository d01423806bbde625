"""Attributions beyond CAM, with the CAMs, behind one entry point.

    heat = attribution.compute("integrated_gradients", model, images, target_class=1, n_steps=50)
    raw = attribution.compute("integrated_gradients", model, images, target_class=1, raw=True)
    heat = attribution.compute("gradcam", model, images)            # delegates to cam.compute

Maps are [B, H, W] float32 in [0, 1] on the image grid (like CAMs); `raw=True` gives the raw
[B, H, W, 3] attribution w.r.t. the [0, 1] image where a method has one (captum's convention).
`attribution.supports(name, model)` says whether a method applies to a model's family ('cnn' or
'vit', `attribution.family(model)`). Gradient methods: `attribution.gradients`; attention and LRP
methods for ViTs (rollout, grad_rollout, attnlrp, cp_lrp): `attribution.transformer`, their LRP
rules in `attribution.lrp`.
"""

from ibo_jax import cam
from ibo_jax.attribution import gradients, transformer  # noqa: F401  (registration side effect)
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

EXTRA: tuple[str, ...] = ("rollout", "grad_rollout", "attnlrp", "cp_lrp", "saliency", "input_x_gradient",
                           "integrated_gradients", "smoothgrad")
assert set(EXTRA) == set(REGISTRY), sorted(set(REGISTRY) ^ set(EXTRA))
METHODS: tuple[str, ...] = cam.METHODS + cam.EXTRA_METHODS + EXTRA

__all__ = [
    "EXTRA", "METHODS", "REDUCTIONS", "REGISTRY", "compute", "family", "has_raw", "make_fn",
    "reduce_channels", "register", "supports", "to_unit",
]
