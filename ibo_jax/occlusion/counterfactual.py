"""The counterfactual strategy (synthetic data only): removed pixels become the twin's, i.e. what
that tissue looks like without tumor. It removes exactly the evidence the data define and stays
in distribution, so its ranking of CAM methods is the faithfulness ground truth (docs/method.md).

    out = occlusion.apply("counterfactual", images, remove_mask, twin=twins)   # I (1 - M) + twin M
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ibo_jax.checks import check_finite
from ibo_jax.occlusion.simple import check_inputs


def counterfactual(images, remove_mask, *, key=None, twin=None) -> jax.Array:
    """I * (1 - M) + twin * M; twin: [B, H, W, 3] uint8 or float in [0, 1] (`data.synthetic`)."""
    del key
    if twin is None:
        raise ValueError("counterfactual: twin= is required (the patches' counterfactual twins, uint8 or "
                         "[0, 1] floats [B, H, W, 3]; synthetic data only: data.synthetic.generate(..., "
                         "counterfactual=True))")
    images, remove_mask = check_inputs(images, remove_mask)
    t = np.asarray(twin)
    if t.shape != images.shape:
        raise ValueError(f"twin: expected shape {tuple(images.shape)} (one twin per image), got {t.shape}")
    if t.dtype == np.uint8:
        t = t.astype(np.float32) / 255.0
    check_finite(t, "twin")
    return jnp.where(remove_mask[..., None], jnp.asarray(t, jnp.float32), images)
