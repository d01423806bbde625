"""Loading trained models for inference: the classifier and the epsilon model a run wrote, and
a DDPM trained with diffusers. Inference code (CAM, occlusion, scoring) depends on this module,
never on the training loops in `ibo_jax.train`.

    model = load_classifier(workdir / "train_classifier")      # eval mode, best-on-validation
    eps = load_eps_model(workdir / "train_ddpm")                # EpsModel: apply(params, x_t, t)
    unet, schedule = load_diffusers_ddpm("my_diffusers_ddpm")   # UNet2DModel + its noise schedule
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from ibo_jax import io as ibo_io
from ibo_jax.models.convert import ARCHS
from ibo_jax.models.plain import cnn_small
from ibo_jax.models.resnet import resnet_small
from ibo_jax.models.unet import UNet2DModel, UNetConfig


def vit_from_fields(num_classes: int, *, rngs: nnx.Rngs | None = None, dtype: Any = None, **fields) -> nnx.Module:
    """A `models.VisionTransformer` from ViTConfig fields (what model_config.json stores for arch
    'vit'; JSON lists become tuples). A `dtype` is refused: the ViT computes in float32."""
    from ibo_jax.models.vit import ViTConfig, vit

    if dtype is not None:
        raise ValueError(f"dtype={dtype}: ViT classifiers compute in float32 (train_classifier.bf16 must be False)")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    return vit(ViTConfig(**fields, num_classes=int(num_classes)), rngs=rngs)


FACTORIES: dict[str, Callable[..., nnx.Module]] = {**ARCHS, "resnet_small": resnet_small, "cnn_small": cnn_small,
                                                   "vit": vit_from_fields}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What `model_config.json` holds: enough to rebuild the module."""

    arch: str
    num_classes: int
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self, *, rngs: nnx.Rngs | None = None, dtype: Any = None) -> nnx.Module:
        if self.arch not in FACTORIES:
            raise ValueError(f"arch: expected one of {sorted(FACTORIES)}, got {self.arch!r}")
        kw = dict(self.kwargs)
        if dtype is not None:
            kw["dtype"] = dtype
        return FACTORIES[self.arch](int(self.num_classes), rngs=rngs or nnx.Rngs(0), **kw)

    def to_json(self) -> dict:
        return {"arch": self.arch, "num_classes": int(self.num_classes), "kwargs": dict(self.kwargs)}



def restore_pytree(path: Path, abstract):
    """An orbax (StandardCheckpointer) pytree restored onto `abstract`'s structure."""
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(path.absolute(), abstract)


def classifier_spec(stage_dir: str | Path) -> ModelSpec:
    """The ModelSpec of a train_classifier stage folder (`model_config.json`)."""
    cfg_path = Path(stage_dir) / "model_config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path}: not found (a finished train_classifier stage has it)")
    c = ibo_io.read_json(cfg_path)
    return ModelSpec(c["arch"], int(c["num_classes"]), c.get("kwargs", {}))


def fresh_classifier(stage_dir: str | Path, seed: int) -> nnx.Module:
    """A freshly initialized classifier of the same architecture (model randomization), eval mode."""
    model = classifier_spec(stage_dir).build(rngs=nnx.Rngs(seed))
    model.eval()
    return model


def load_classifier(stage_dir: str | Path, *, dtype: Any = None) -> nnx.Module:
    """Rebuilds the module from `model_config.json` and restores `model/` (orbax); eval mode."""
    stage_dir = Path(stage_dir)
    weights = stage_dir / "model"
    if not weights.exists():
        raise FileNotFoundError(f"{stage_dir}: expected model_config.json and model/ (a finished train_classifier stage)")
    spec = classifier_spec(stage_dir)
    abstract = nnx.eval_shape(lambda: spec.build(rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, params, stats, rest = nnx.split(abstract, nnx.Param, nnx.BatchStat, ...)
    saved = restore_pytree(weights, {"params": params, "stats": stats})
    fresh_rest = nnx.split(spec.build(rngs=nnx.Rngs(0), dtype=dtype), nnx.Param, nnx.BatchStat, ...)[3]
    model = nnx.merge(graphdef, saved["params"], saved["stats"], fresh_rest)
    model.eval()
    return model



@dataclasses.dataclass(frozen=True)
class EpsModel:
    """A trained epsilon network as a pure function: `apply(params, x_t, t) -> eps` [B, H, W, C]."""

    apply: Callable[[Any, jax.Array, jax.Array], jax.Array]
    params: Any
    betas: np.ndarray  # float32 [T], the trained schedule
    image_size: int

    def __call__(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
        return self.apply(self.params, x_t, t)


def make_apply(graphdef: nnx.GraphDef, prediction_type: str = "epsilon",
               betas: np.ndarray | None = None) -> Callable[[Any, jax.Array, jax.Array], jax.Array]:
    """`apply(params, x_t, t) -> eps` whatever the network predicts (eps, v or x0: converted with
    the trained schedule `betas`); one function per (graphdef, prediction type, schedule), so jit
    caches keyed on it hit."""
    if prediction_type != "epsilon" and betas is None:
        raise ValueError(f"make_apply: a {prediction_type!r} network needs the trained betas to give eps")
    key = None if prediction_type == "epsilon" else np.asarray(betas, np.float64).tobytes()
    return _make_apply(graphdef, prediction_type, key)


@functools.lru_cache(maxsize=64)
def _make_apply(graphdef, prediction_type: str, betas_key: bytes | None):
    from ibo_jax.repaint import diffusion

    if prediction_type == "epsilon":
        def apply(params, x_t, t):
            return nnx.merge(graphdef, params)(x_t, t)

        return apply
    sched = diffusion.make_schedule(np.frombuffer(betas_key, np.float64))

    def apply(params, x_t, t):
        out = nnx.merge(graphdef, params)(x_t, t)
        return diffusion.eps_from_output(prediction_type, sched, x_t.astype(jnp.float32), t, out)

    return apply


def save_eps_model(stage_dir: str | Path, config: UNetConfig, ema_params: Any, *, betas: np.ndarray,
                   image_size: int, schedule: dict | None = None, prediction_type: str = "epsilon",
                   extra: dict | None = None) -> None:
    """Writes `model.json` (UNet config, schedule, what the network predicts, the image size it
    inpaints at, `extra` facts such as the training crop) and `ema_params/` (orbax)."""
    stage_dir = Path(stage_dir).absolute()
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(stage_dir / "ema_params", jax.tree.map(np.asarray, nnx.to_pure_dict(ema_params)), force=True)
    ckptr.wait_until_finished()
    ibo_io.write_json(stage_dir / "model.json", {"unet": config.to_dict(), "image_size": int(image_size),
                                          "betas": np.asarray(betas, np.float64).tolist(),
                                          "schedule": schedule or {}, "prediction_type": prediction_type,
                                          **(extra or {})})


def load_eps_model(stage_dir: str | Path, *, dtype: Any = None) -> EpsModel:
    """The EMA epsilon model written by the train_ddpm stage (or `save_eps_model`)."""
    stage_dir = Path(stage_dir).absolute()
    meta_file = stage_dir / "model.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"load_eps_model: {meta_file} not found (has train_ddpm finished?)")
    meta = json.loads(meta_file.read_text())
    cfg = UNetConfig.from_dict(meta["unet"])
    abstract = nnx.eval_shape(lambda: UNet2DModel(cfg, rngs=nnx.Rngs(0), dtype=dtype))
    graphdef, params = nnx.split(abstract, nnx.Param)
    target = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), nnx.to_pure_dict(params))
    restored = ocp.StandardCheckpointer().restore(stage_dir / "ema_params", target)
    nnx.replace_by_pure_dict(params, restored)
    betas = np.asarray(meta["betas"], np.float64)
    return EpsModel(apply=make_apply(graphdef, meta.get("prediction_type", "epsilon"), betas), params=params,
                    betas=betas.astype(np.float32), image_size=int(meta["image_size"]))


_DIFFUSERS_BETAS = {"linear": "linear", "squaredcos_cap_v2": "cosine"}


def load_diffusers_ddpm(path: str | Path, *, dtype: Any = None) -> tuple[UNet2DModel, dict | None]:
    """A diffusers-trained DDPM: (the UNet as an NNX module, its noise schedule or None).

    `path` is a UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors/.bin) or a
    pipeline folder holding `unet/` (and usually `scheduler/`). The schedule comes from
    `scheduler_config.json` in the pipeline's `scheduler/`, beside the UNet's files, or in
    `../scheduler/`: {'kind', 'T', 'beta_start', 'beta_end'} as `diffusion.beta_schedule` takes
    them (diffusers' 'linear' and 'squaredcos_cap_v2' = 'cosine'); None when there is no such file.
    The schedule dict carries the scheduler's `prediction_type` ('epsilon', 'v_prediction' or
    'sample'; `make_apply` turns any of them into eps). Errors name the file and field.
    """
    from ibo_jax.models.unet_convert import from_diffusers_unet

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"init_weights: {path} does not exist (expected a diffusers UNet2DModel "
                                f"or pipeline folder)")
    unet_dir = path / "unet" if (path / "unet" / "config.json").is_file() else path
    candidates = [path / "scheduler" / "scheduler_config.json", unet_dir / "scheduler_config.json",
                  unet_dir.parent / "scheduler" / "scheduler_config.json"]
    sched_file = next((f for f in candidates if f.is_file()), None)
    schedule = None
    if sched_file is not None:
        from ibo_jax.models.unet_convert import read_config_json

        sc = read_config_json(sched_file)
        from ibo_jax.repaint.diffusion import PREDICTION_TYPES

        if sc.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
            raise ValueError(f"{sched_file}: prediction_type={sc['prediction_type']!r}; expected one of "
                             f"{PREDICTION_TYPES}")
        if sc.get("trained_betas") is not None:
            raise ValueError(f"{sched_file}: trained_betas (an explicit beta list) is not supported; expected "
                             f"beta_schedule in {sorted(_DIFFUSERS_BETAS)}")
        kind = sc.get("beta_schedule", "linear")
        if kind not in _DIFFUSERS_BETAS:
            raise ValueError(f"{sched_file}: beta_schedule={kind!r} is not supported; expected one of "
                             f"{sorted(_DIFFUSERS_BETAS)}")
        schedule = {"kind": _DIFFUSERS_BETAS[kind], "T": int(sc.get("num_train_timesteps", 1000)),
                    "beta_start": float(sc.get("beta_start", 1e-4)), "beta_end": float(sc.get("beta_end", 0.02)),
                    "prediction_type": sc.get("prediction_type", "epsilon"),
                    "source": str(sched_file)}
    model = from_diffusers_unet(unet_dir, dtype=dtype)
    if model.config.in_channels != 3 or model.config.out_channels != 3:
        raise ValueError(f"{unet_dir / 'config.json'}: in_channels={model.config.in_channels}, "
                         f"out_channels={model.config.out_channels}; expected 3 and 3 (an RGB epsilon network; "
                         f"learned-variance models with 6 outputs are not supported)")
    return model, schedule
