"""Token dropping: a deletion only a ViT has. The removed patches' tokens leave the sequence.

    out = occlusion.apply("token_drop", images, remove, model=vit, tumor_class=1)
    out["p"], out["logit"]                                  # [U] each: this strategy predicts itself
    keep = token_drop.kept_tokens(remove, grid=(8, 8))      # bool [U, h*w], raster order

The removal mask is rounded to the ViT's token grid: a patch token is dropped when at least half
of its pixels are removed (`removed pixels * 2 >= pixels per patch`), else it is kept with all
of its original pixels. The ViT then predicts the original image with the dropped tokens
excluded as keys from every attention and from any patch pooling (`VisionTransformer.__call__`'s
`keep`: the same as slicing them out of the sequence after the position embedding); the class and
register tokens are always kept. No image is produced (the strategy is declared "stored" in
`occlusion.PREDICTED_BY`: it writes p(tumor) and the tumor log-odds itself, and the realism
columns are n/a). Only for ViT classifiers (`attribution.family(model) == 'vit'`).

p is the softmax probability of `tumor_class`; logit = log p - log(1 - p), as
`evaluation.predict.make_predict_fn` computes it for re-predicted images (with nothing dropped,
token_drop gives exactly that prediction of the original image).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.parallel import map_batches


def kept_tokens(remove_mask, grid: tuple[int, int]) -> np.ndarray:
    """bool [B, h*w] (raster order): True where a token is kept, i.e. fewer than half of the pixels of
    its patch are removed. remove_mask bool [B, H, W] with H, W multiples of the grid."""
    remove = np.asarray(remove_mask, bool)
    b, H, W = remove.shape
    h, w = int(grid[0]), int(grid[1])
    if H % h or W % w:
        raise ValueError(f"remove_mask: {H}x{W} pixels do not split into the ViT's {h}x{w} token grid")
    ph, pw = H // h, W // w
    removed = remove.reshape(b, h, ph, w, pw).sum((2, 4))  # [B, h, w] removed pixels per patch
    return (2 * removed < ph * pw).reshape(b, h * w)


@partial(jax.jit, static_argnums=0)
def _log_probs(graphdef, state, x, keep):
    logits = nnx.merge(graphdef, state)(x, keep=keep)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def check_vit(model, name: str = "model") -> None:
    """A clear error unless `model` is a ViT (a token model with a `keep` argument)."""
    if model is None:
        raise ValueError(f"token_drop: needs {name}= (the run's ViT classifier)")
    if not hasattr(model, "num_prefix_tokens") or not hasattr(model, "grid_size"):
        raise ValueError(f"token_drop: only ViT classifiers drop tokens; {name} is a {type(model).__name__} "
                         f"(use a pixel strategy for CNNs)")


def token_drop(images, remove_mask, *, key=None, model: nnx.Module = None, tumor_class: int = 1,
               batch_size: int = 32) -> dict:
    """{"p": p(tumor) [U], "logit": tumor log-odds [U]} of `model` on `images` [U, H, W, 3] in
    [0, 1] with the tokens of the removed patches dropped (see the module docstring). `key` is
    unused (the strategy is deterministic)."""
    del key
    check_vit(model)
    images = np.asarray(images, np.float32)
    keep = kept_tokens(remove_mask, model.grid_size)
    graphdef, state = nnx.split(model)
    if not len(images):
        return {"p": np.zeros(0, np.float32), "logit": np.zeros(0, np.float32)}

    def batch(x, k):
        return (np.asarray(_log_probs(graphdef, state, x, k), np.float64),)

    (lp,) = map_batches(batch, images, keep, batch_size=batch_size)
    lt = lp[:, int(tumor_class)]
    rest = np.log(np.clip(-np.expm1(lt), 1e-300, None))  # log(1 - p), stable
    return {"p": np.exp(lt).astype(np.float32), "logit": (lt - rest).astype(np.float32)}
