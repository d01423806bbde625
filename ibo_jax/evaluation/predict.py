"""Re-prediction: p(tumor), the tumor log-odds and pooled target-layer features of a classifier,
in one batched pass over numpy images. The one p(tumor) path of the evaluation: the score, trust,
ddpm_check and repaint_sweep stages build it and hand it to the library as `predict_fn`
(`scoring`, `ddpm_check`, `sweep`). Training's validation metrics use `train.classifier.predict`
(all classes' softmax, sharded over the mesh) on purpose."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ibo_jax.parallel import map_batches


def is_token_model(net) -> bool:
    """True for a token model (a ViT: `features_and_context` / `embed` / `fc`), False for a CNN."""
    return hasattr(net, "features_and_context") and hasattr(net, "embed")


def logits_and_pooled(net, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits [B, K], pooled features [B, C]) of images [B, H, W, 3] in [0, 1], in one pass.

    A CNN: its CAM target layer `features(x)`, global-average pooled, and `head` of it. A ViT:
    `embed(x)`, the pooled representation its linear head `fc` reads (after the final norm), and
    `fc` of it (= `net(x)`).
    """
    if is_token_model(net):
        e = net.embed(x)
        return net.fc(e), e
    a = net.features(x)  # [B, h, w, C]
    return net.head(a), jnp.mean(a.astype(jnp.float32), axis=(1, 2))


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; float images -> float32. Shape [N, H, W, 3] checked."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images: expected [N, H, W, 3], got shape {x.shape}")
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def make_predict_fn(model: nnx.Module, *, tumor_class: int = 1, batch_size: int = 32):
    """fn(uint8 or float images [N, H, W, 3]) -> (p_tumor [N], logit [N], feat [N, C]) numpy.

    One pass (`logits_and_pooled`): a CNN's features(x) at the CAM target layer, then head(), `feat`
    that activation global-average pooled; a ViT's embed(x) then fc(), `feat` the embedding (KID
    features). logit = log p_t - log(1 - p_t), the tumor log-odds (for two
    classes the logit difference). Batches of `batch_size`, the last one zero-padded when there
    is more than one (one compiled shape).
    """
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):  # [B, H, W, 3] -> [B, K], [B, C]
        net = nnx.merge(graphdef, state)
        logits, feat = logits_and_pooled(net, x)
        return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), feat.astype(jnp.float32)

    def batch(xb):
        lp, f = forward(state, xb)
        return np.asarray(lp, np.float64), np.asarray(f, np.float32)

    def fn(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = map_batches(batch, to_float(images), batch_size=batch_size)
        if out is None:
            raise ValueError("images: no images to predict")
        lp, feat = out
        lt = lp[:, tumor_class]
        rest = np.log(np.clip(-np.expm1(lt), 1e-300, None))  # log(1 - p_t), stable
        return np.exp(lt), lt - rest, feat

    return fn
