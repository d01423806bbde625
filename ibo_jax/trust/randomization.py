"""Model-parameter randomization (Adebayo et al. 2018): an explanation that stays the same when the
model's weights are re-initialized is not explaining the model.

    res = randomization.cascade(model, fresh_fn, images, methods=("gradcam", "integrated_gradients"))

Every parameter (kernels, biases, BatchNorm scale and bias with its running statistics kept; a
ViT's tokens and position embedding) is replaced by a fresh initialization, cascading from the
head down: CNNs: head, then the block before it, ... (the model's top-level parameter groups in
reverse forward order); ViTs: head (final norm, pooling, fc), then the blocks from the last to the
first, then the patch embedding (`cascade_steps`). Every method of `attribution` is covered
(CAMs, gradient and attention methods). At each step every method's
maps are compared with the trained model's at the CAM's own resolution (the heatmap averaged back
onto the target layer's grid): Spearman and SSIM per image, averaged. The floor is the similarity
of two independent randomizations of the whole model. A known answer: Eigen-CAM reads only the
target layer's activations, so head-only randomization leaves it unchanged; Grad-CAM's weights
come from the head's gradient, so its maps change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from ibo_jax import attribution, cam
from ibo_jax.evaluation import realism
from ibo_jax.stats import rankdata


def _first_use(model: nnx.Module, x: np.ndarray) -> dict[str, int]:
    """Parameter group name (depth 1 and 2, e.g. 'layer1' and 'layer1.0') -> index of the first
    equation of the traced forward pass that reads one of its parameters."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]

    def forward(p):
        net = nnx.merge(graphdef, p, rest)
        net.eval()
        return net(x)

    closed = jax.make_jaxpr(forward)(params)
    first_use = {}
    for i, eqn in enumerate(closed.jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jax.extend.core.Var):
                first_use.setdefault(v, i)
    order = {}
    for (path, _), var in zip(leaves, closed.jaxpr.invars, strict=True):
        keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
        when = first_use.get(var, len(closed.jaxpr.eqns))
        for depth in (1, 2):  # the top-level group and, for short lists of groups, its items
            name = ".".join(str(k) for k in keys[:depth])
            order[name] = min(order.get(name, when), when)
    return order


def cascade_groups(model: nnx.Module, x: np.ndarray) -> list[str]:
    """Top-level parameter groups in forward order (lists expanded when there are few groups).

    The order is read off the traced forward pass (where each parameter is first used), so it
    holds for any module, whatever its attributes' order."""
    order = _first_use(model, x)
    top = sorted({n for n in order if "." not in n}, key=order.get)
    if len(top) < 4:  # e.g. VGG's `convs` list: one group per layer
        top = sorted({n for n in order if n.count(".") == 1 and n.split(".")[1].isdigit()} |
                     {t for t in top if not any(n.startswith(t + ".") and n.split(".")[1].isdigit() for n in order)},
                     key=order.get)
    return top


def cascade_steps(model: nnx.Module, x: np.ndarray) -> list[tuple[str, list[str]]]:
    """The cascade's units in forward order: (name, parameter groups re-initialized together).

    CNNs: one unit per `cascade_groups` entry. ViTs (`attribution.family(model) == 'vit'`):
    'patch_embed' (every top-level group used before the first block: the patch embedding, class
    and register tokens, position embedding, pre-norm), then 'blocks.0' ... 'blocks.{depth-1}',
    then 'head' (everything after the last block: final norm, attention pool, fc_norm, fc). The
    cascade runs this list backwards: head, blocks from the last to the first, patch embedding.
    """
    if attribution.family(model) != "vit":
        return [(g, [g]) for g in cascade_groups(model, x)]
    order = _first_use(model, x)
    top = sorted({n for n in order if "." not in n and n != "blocks"}, key=order.get)
    blocks = sorted((n for n in order if n.startswith("blocks.") and n.count(".") == 1),
                    key=lambda n: int(n.split(".")[1]))
    embed = [n for n in top if order[n] < order["blocks"]]
    head = [n for n in top if order[n] > order["blocks"]]
    return [("patch_embed", embed), *[(b, [b]) for b in blocks], ("head", head)]


def _get(tree: dict, path: str):
    for part in path.split("."):
        tree = tree[int(part) if part.isdigit() and int(part) in tree else part]
    return tree


def _set(tree: dict, path: str, value) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        tree = tree[int(part) if part.isdigit() and int(part) in tree else part]
    last = parts[-1]
    tree[int(last) if last.isdigit() and int(last) in tree else last] = value


def _committed(x) -> bool:
    return isinstance(x, jax.Array) and bool(getattr(x, "committed", getattr(x, "_committed", False)))


def randomized(model: nnx.Module, fresh: nnx.Module, groups: Sequence[str]) -> nnx.Module:
    """A copy of `model` with the parameters of `groups` taken from `fresh` (same architecture)."""
    graphdef, state = nnx.split(model)
    out = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
    params = nnx.state(out, nnx.Param)
    pure = nnx.to_pure_dict(params)
    new = nnx.to_pure_dict(nnx.state(fresh, nnx.Param))
    for g in groups:
        # placed like the trained weights (a restored checkpoint's leaves are committed to a
        # NamedSharding, a fresh model's are uncommitted): one compilation per method for the whole
        # cascade, not one per mix of placements (measured: 200 compilations, 137 s of the ViT
        # demo's trust); uncommitted trained weights leave the fresh ones as they are
        _set(pure, g, jax.tree.map(lambda f, t: jax.device_put(f, t.sharding) if _committed(t) else f,
                                   _get(new, g), _get(pure, g)))
    nnx.replace_by_pure_dict(params, pure)
    nnx.update(out, params)
    return out


def _pool(heat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """[B, H, W] -> [B, h, w] by block means (the CAM's own grid)."""
    b, H, W = heat.shape
    h, w = hw
    if H % h == 0 and W % w == 0:
        return heat.reshape(b, h, H // h, w, W // w).mean(axis=(2, 4))
    return np.asarray(jax.image.resize(heat, (b, h, w), "linear", antialias=True))


def similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean over images of Spearman and SSIM between maps a, b [B, h, w]."""
    rho = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1), strict=True):
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            rho.append(float(np.corrcoef(rankdata(x), rankdata(y))[0, 1]))
    lo = min(a.shape[1], a.shape[2])
    ss = (np.asarray(realism.ssim(a[..., None], b[..., None], win=min(7, lo - (1 - lo % 2))))
          if lo >= 3 else np.full(len(a), np.nan))
    return {"spearman": float(np.mean(rho)) if rho else float("nan"), "ssim": float(np.nanmean(ss))}


def cascade(model: nnx.Module, fresh_fn: Callable[[int], nnx.Module], images: np.ndarray, *,
            methods: Sequence[str], target_class: int = 1, method_options: dict | None = None) -> dict:
    """Similarity of each method's maps to the trained model's after each cascading
    re-initialization step (`cascade_steps` backwards), and the floor of two independent full
    randomizations. fresh_fn(seed) -> a freshly initialized model of the same architecture.

    methods: any names of `attribution.METHODS` (CAMs, gradient and attention methods) that
    `attribution.supports` for this model; method_options: name -> options for
    `attribution.make_fn` (SmoothGrad's default noise is the same at every step, so only the
    weights change). Every map is compared on the target layer's grid (`model.features`)."""
    x = np.asarray(images, np.float32)
    x = x / 255.0 if np.asarray(images).dtype == np.uint8 else x
    for m in methods:
        if not attribution.supports(m, model):
            raise ValueError(f"methods: {m!r} does not support {attribution.family(model)!r} models")
    graphdef, _ = nnx.split(model)
    hw = tuple(model.features(x[:1]).shape[1:3])
    fns = {m: attribution.make_fn(m, graphdef, target_class=target_class,
                                  **cam.resolve_options((method_options or {}).get(m, {})))
           for m in methods}

    def maps(net) -> dict[str, np.ndarray]:
        state = nnx.state(net)
        return {m: _pool(np.asarray(fn(state, x)[0], np.float32), hw) for m, fn in fns.items()}

    units = cascade_steps(model, x[:1])
    params_of = dict(units)
    names = [n for n, _ in units]
    every = [g for _, gs in units for g in gs]
    trained = maps(model)
    fresh = fresh_fn(1)
    steps = []
    for k in range(1, len(names) + 1):
        chosen = names[::-1][:k]  # head first
        got = maps(randomized(model, fresh, [g for n in chosen for g in params_of[n]]))
        steps.append({"randomized": chosen[-1], "groups": list(chosen),
                      "similarity": {m: similarity(trained[m], got[m]) for m in methods}})
    r1, r2 = maps(randomized(model, fresh, every)), maps(randomized(model, fresh_fn(2), every))
    floor = {m: similarity(r1[m], r2[m]) for m in methods}
    return {"groups_forward_order": names, "resolution": list(hw), "n_images": int(len(x)), "steps": steps,
            "floor": floor}
