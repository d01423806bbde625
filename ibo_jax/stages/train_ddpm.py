"""Stage `train_ddpm`: train the epsilon UNet on the NORMAL patches of the training split only.

Inputs: stage `data` (`ibo_jax.data.patches.make_loader(..., "train", label=0)`). The samples'
quality against held-out normal patches (KID in the classifier's feature space) is measured by
the `ddpm_check` stage, which has the classifier.

Outputs (train_ddpm/):
  model.json, ema_params/   the EMA model, read by `ibo_jax.models.loaders.load_eps_model(dir)`
  checkpoints/<step>/       orbax (params, EMA, optimizer, step): a killed run resumes from the last
  samples.png               a grid of samples (short respaced ancestral DDPM), rewritten every
                            `sample_every` steps and at the end; real.png: training patches beside it
  loss.png                  the loss curve (raw and smoothed); loss.csv its numbers
A resumed run continues from the last checkpoint with a data stream seeded by the resume step (the
batches after a resume differ from an uninterrupted run's; the model step count does not).

Your own DDPM: `init_weights` names a diffusers UNet2DModel (or pipeline) folder. Its architecture
and, when the folder has a scheduler config, its noise schedule are used instead of this stage's
fields (model.json records what was used); its `sample_size` is the DDPM's image size unless
`image_size` is set. `num_steps = 0` uses it as is; more steps fine-tune it on the normal patches.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ibo_jax import artifacts, parallel, rng
from ibo_jax import io as ibo_io
from ibo_jax.models.unet import unet2d
from ibo_jax.repaint import diffusion
from ibo_jax.train import ddpm


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # UNet (diffusers UNet2DModel names); demo-sized here, configs/camelyon16.py has the study's
    c.block_out_channels = (16, 32, 64)
    c.layers_per_block = 1
    c.attention_levels = (False, False, False)
    c.mid_attention = True
    c.attention_head_dim = 32
    c.norm_num_groups = 8
    c.dropout = 0.0
    c.image_size = 0  # the DDPM's own size; 0 = the global image_size (patches are resized to it)
    # diffusion
    c.T = 1000
    c.beta_schedule = "linear"
    c.beta_start = 1e-4
    c.beta_end = 0.02
    c.prediction_type = "epsilon"  # what the UNet outputs: 'epsilon', 'v_prediction' or 'sample' (x0);
    #                                 the EpsModel always gives eps (model.json records the type)
    c.loss_weighting = "none"  # or 'min_snr' (min-SNR-gamma weights: faster convergence)
    c.snr_gamma = 5.0
    c.crop_size = 0  # > 0: train on random crops of this size at the patches' own pixel scale; the
    #                  fully convolutional UNet then inpaints whole patches (image_size = 0: native)
    # optimisation
    c.num_steps = 200
    c.batch_size = 16  # global
    c.lr = 1e-3
    c.lr_schedule = "constant"  # or 'cosine' (decay to 0 at num_steps, after the warm-up)
    c.warmup_steps = 20
    c.weight_decay = 1e-6
    c.grad_clip = 1.0
    c.ema_decay = 0.995
    c.bf16 = False
    c.augment = True
    # the DDPM's own seed (initialization, noise, batch order); -1 = the global seed. A second DDPM
    # on the same normal patches: the same config with another seed.
    c.seed = -1
    # bookkeeping
    c.log_every = 10
    c.checkpoint_every = 100
    c.sample_every = 0  # 0: only at the end
    c.n_samples = 16
    c.sample_steps = 50
    # a DDPM trained with diffusers (UNet2DModel folder, or pipeline folder with unet/ + scheduler/):
    # its architecture and noise schedule replace the fields above; num_steps > 0 fine-tunes it on
    # the normal patches, num_steps = 0 uses it as is
    c.init_weights = ""
    return c


def _grid(images: np.ndarray, cols: int, scale: int = 0) -> np.ndarray:
    """[N, H, W, 3] float in [0, 1] -> one uint8 image, `cols` per row, 2 px white gaps; each
    image enlarged `scale` times (nearest; 0: to about 192 px, so nuclei are visible)."""
    scale = scale or max(1, 192 // images.shape[1])
    images = np.repeat(np.repeat(np.asarray(images), scale, axis=1), scale, axis=2)
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = \
            np.clip(np.rint(im * 255), 0, 255).astype(np.uint8)
    return out


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    with ibo_io.atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_loss_plot(path: Path, steps: list[int], losses: list[float]) -> None:
    plt = ibo_io.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss")
    if len(losses) >= 5:
        k = max(len(losses) // 20, 3)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("eps MSE")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    ibo_io.save_figure(fig, path)


def _resize(x, size: int):
    """[B, H, W, 3] -> [B, size, size, 3], antialiased (the same resize the ibo strategy uses)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    return jnp.clip(jax.image.resize(jnp.asarray(x), (x.shape[0], size, size, x.shape[-1]), "linear",
                                     antialias=True), 0.0, 1.0)


def input_key(inputs, config) -> dict[str, str]:
    """What this stage reads from `data`, by content: the normal training patches (index and pixels).
    The pipeline keys the stage on it instead of the data stage's fingerprint, so data configs
    that differ only in their tumor patches (e.g. `data.cue`) share one DDPM."""
    import hashlib

    from ibo_jax.data.patches import read_split

    normal = read_split(inputs["data"], "train", label=0)
    h = hashlib.sha256()
    for k in ("index", "image"):
        a = np.ascontiguousarray(normal[k])
        h.update(f"{k}{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return {"data": h.hexdigest()[:16]}


def seed_and_key(ctx) -> tuple[int, jax.Array]:
    """(seed of the data stream, key of initialization, noise and samples): the global seed and the
    stage's key, or those of `train_ddpm.seed` when it is >= 0 (a second DDPM on the same data)."""
    own = int(ctx.cfg.get("seed", -1))
    if own < 0:
        return int(ctx.config.seed), ctx.key
    return own, rng.fold(rng.root_key(own), ctx.name)


def run(ctx) -> dict:
    from ibo_jax.data.patches import make_loader

    c, t0 = ctx.cfg, time.time()
    seed, key = seed_and_key(ctx)
    data_size = int(ctx.config.image_size)
    dtype = jnp.bfloat16 if c.bf16 else None
    schedule = {"kind": c.beta_schedule, "T": int(c.T), "beta_start": float(c.beta_start),
                "beta_end": float(c.beta_end)}
    prediction_type = str(c.prediction_type)
    if c.num_steps < 0 or (c.num_steps == 0 and not c.init_weights):
        raise ValueError(f"train_ddpm.num_steps={c.num_steps}: 0 means 'use train_ddpm.init_weights as the DDPM "
                         f"as is', which is not set; give a diffusers model folder or a positive step count")
    if c.init_weights:
        model, imported = ddpm.load_diffusers_ddpm(c.init_weights, dtype=dtype)
        schedule = imported or {**schedule, "source": "train_ddpm config (no scheduler_config.json found)"}
        prediction_type = schedule.get("prediction_type", "epsilon")
        size = int(c.image_size) or int(model.config.sample_size or 0) or data_size
        dropout = float(model.config.dropout)
    else:
        model = unet2d(tuple(c.block_out_channels), c.layers_per_block, attention_levels=tuple(c.attention_levels),
                       mid_attention=c.mid_attention, attention_head_dim=c.attention_head_dim or None,
                       norm_num_groups=c.norm_num_groups, dropout=c.dropout, sample_size=int(c.image_size) or data_size,
                       dtype=dtype, rngs=nnx.Rngs(rng.fold(key, "init")))
        size, dropout = int(c.image_size) or data_size, float(c.dropout)
    if size > data_size:
        raise ValueError(f"train_ddpm.image_size={size}{' (the init_weights model sample_size)' if c.init_weights else ''} "
                         f"is larger than the patches ({data_size})")
    to_size = jax.jit(lambda x: _resize(x, size)) if size != data_size else (lambda x: x)
    main = ctx.process_index == 0
    mesh = ctx.mesh
    if c.batch_size % ctx.process_count or (c.batch_size // ctx.process_count) % parallel.local_batch_multiple(mesh):
        raise ValueError(f"train_ddpm.batch_size={c.batch_size} must split evenly over processes and local devices")

    betas = diffusion.beta_schedule(schedule["kind"], schedule["T"], schedule["beta_start"], schedule["beta_end"])
    sched = diffusion.make_schedule(betas)
    tx = ddpm.make_optimizer(c.lr, c.warmup_steps, c.weight_decay, c.grad_clip, schedule=str(c.lr_schedule),
                             total_steps=int(c.num_steps))
    crop = int(c.crop_size)
    if crop and crop < 8:
        raise ValueError(f"train_ddpm.crop_size={crop}: expected 0 (whole patches) or >= 8")
    crop = crop if crop < size else 0  # a crop as large as the patches is the whole patch
    graphdef, state = ddpm.init_state(model, tx)
    state = parallel.replicate(state, mesh)
    mngr = ddpm.checkpoint_manager(ctx.dir / "checkpoints")
    restored = ddpm.restore_checkpoint(mngr, state)
    if restored is not None:
        state = restored
    start = int(state["step"])
    step_fn = ddpm.make_train_step(graphdef, tx, sched, ema_decay=c.ema_decay, augment=c.augment,
                                   dropout=dropout > 0, prediction_type=prediction_type,
                                   loss_weighting=str(c.loss_weighting), snr_gamma=float(c.snr_gamma), crop_size=crop)

    apply = ddpm.make_apply(graphdef, prediction_type, betas)  # one function: the sampler compiles once

    def eps_model(st):
        return ddpm.EpsModel(apply=apply, params=st["ema"], betas=np.float32(betas),
                             image_size=size)

    def write_samples(st, step):
        x = np.asarray(ddpm.sample(eps_model(st), rng.fold(key, "samples"), c.n_samples,
                                   num_steps=c.sample_steps))
        if main:
            grid = _grid(x, int(np.ceil(np.sqrt(c.n_samples))))
            _write_png(artifacts.figure_path("train_ddpm", ctx.dir), grid)
            ctx.image("train_ddpm/samples", grid, step)
        return x

    # no training left (finished, or an imported model used as is): no training data needed
    loader = make_loader(ctx.input_dir("data"), "train", batch_size=c.batch_size // ctx.process_count,
                         shuffle=True, seed=rng.stable_int(f"{seed}/ddpm/{start}"), num_epochs=None,
                         label=0, shard_index=ctx.process_index, shard_count=ctx.process_count,
                         drop_remainder=True) if start < c.num_steps else ()
    log_file = ctx.dir / "loss.csv"
    history = [tuple(map(float, line.split(","))) for line in log_file.read_text().split()[1:]] \
        if log_file.is_file() and start > 0 else []
    history = [(int(s), v) for s, v in history if s <= start]
    real_batch, t_first, losses = None, None, []
    it = iter(loader)
    for step in ctx.progress(range(start, c.num_steps), total=c.num_steps - start, desc="train_ddpm", unit="step"):
        images = np.asarray(to_size(np.asarray(next(it)["image"], np.float32)))  # [b, S, S, 3] in [0, 1]
        if real_batch is None:
            real_batch = images
        state, metrics = step_fn(state, parallel.shard_batch(images, mesh), rng.fold(key, "step", step))
        losses.append(metrics["loss"])
        if t_first is None:
            jax.block_until_ready(metrics["loss"])
            t_first = time.time()
        done = step + 1
        if done % c.log_every == 0 or done == c.num_steps:
            vals = [float(v) for v in losses]
            losses = []
            history.append((done, float(np.mean(vals))))
            ctx.scalar("train_ddpm/loss", history[-1][1], done)
            ctx.scalar("train_ddpm/grad_norm", float(metrics["grad_norm"]), done)
        if done % c.checkpoint_every == 0 and done != c.num_steps:
            ddpm.save_checkpoint(mngr, state)
            if main:
                ibo_io.write_text(log_file, "step,loss\n" + "".join(f"{s},{v:.6g}\n" for s, v in history))
        if c.sample_every and done % c.sample_every == 0 and done != c.num_steps:
            write_samples(state, done)
    train_s = time.time() - (t_first or time.time())
    if start < c.num_steps:
        ddpm.save_checkpoint(mngr, state)
    ddpm.save_eps_model(ctx.dir, model.config, state["ema"], betas=betas, image_size=size,
                        schedule={**schedule, "init_weights": str(c.init_weights) or None},
                        prediction_type=prediction_type, extra={"train_crop_size": crop or None})
    t_s = time.time()
    samples = write_samples(state, c.num_steps)
    sample_s = time.time() - t_s
    summary = {"steps": int(c.num_steps), "resumed_from": start, "init_weights": str(c.init_weights) or None, "final_loss": history[-1][1] if history else None,
               "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
               "train_seconds_after_compile": round(train_s, 2), "sample_seconds": round(sample_s, 2),
               "sample_mean_rgb": np.round(samples.mean(axis=(0, 1, 2)), 4).tolist()}
    if real_batch is not None:
        summary["real_mean_rgb"] = np.round(real_batch.mean(axis=(0, 1, 2)), 4).tolist()
    if main:
        ibo_io.write_text(log_file, "step,loss\n" + "".join(f"{s},{v:.6g}\n" for s, v in history))
        if history:
            _write_loss_plot(ctx.dir / "loss.png", [s for s, _ in history], [v for _, v in history])
        if real_batch is not None:
            _write_png(ctx.dir / "real.png", _grid(real_batch[: c.n_samples], int(np.ceil(np.sqrt(c.n_samples)))))
    summary["seconds"] = round(time.time() - t0, 2)
    return summary
