"""CAM explanations in JAX: seven methods (plus HiResCAM and LayerCAM), batched and jitted.

    heat = cam.compute("gradcam", model, images, target_class=1)   # [B, H, W] float32 in [0, 1]
    heat, info = cam.compute("scorecam", model, images, return_info=True, batch_size=64)

Models follow `ibo_jax.models.base.Classifier` (normalize / biased_forward, and the target layer
through `models.base.target_layer(model, xn) -> (grid, head_fn)`): CNNs (features / head) and ViTs
(the patch-token grid at `blocks[-1].norm1`, prefix tokens dropped, the real h x w grid; the rest
of the network in `head_fn`). Maps match pytorch-grad-cam 1.5.7 for the same weights (Eigen-CAM up
to the SVD sign), on ViTs with a reshape transform that drops every prefix token (class and register
tokens) and Ablation-CAM's `AblationLayerVit` (tests/test_cam_vit.py).
"""

from ibo_jax.cam import (  # noqa: F401  (registration side effect, in METHODS order)
    ablationcam,
    eigencam,
    fullgrad,
    gradcam,
    gradcampp,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from ibo_jax.cam.base import (
    REGISTRY,
    compute,
    make_cam_fn,
    minmax,
    resize,
    resize_matrix,
    resolve_options,
)

METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "ablationcam",
    "fullgrad",
    "scorecam",
    "eigencam",
)
EXTRA_METHODS: tuple[str, ...] = ("hirescam", "layercam")

__all__ = [
    "EXTRA_METHODS",
    "METHODS",
    "REGISTRY",
    "compute",
    "make_cam_fn",
    "minmax",
    "resize",
    "resize_matrix",
    "resolve_options",
]
