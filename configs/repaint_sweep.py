"""Inpainting samplers and their settings, cost against quality, alone.

    python -m ibo_jax.launch --config configs/repaint_sweep.py --workdir runs/demo         # demo, CPU
    python -m ibo_jax.launch --config configs/repaint_sweep.py:full --workdir runs/study   # GPU/TPU, 224

The demo variant is `configs/demo.py` with the samplers (RePaint, DDIM-RePaint, DDNM) against the
study's RePaint (250, 10, 10) as the reference on 64 box inpaintings of test patches (tumor and
normal) plus the whole tumor region of the tumor ones (residual evidence): the cheapest setting
non-inferior to it is reported. Expect well over an hour on 2 CPU cores, nearly all of it the
reference's 2,410 network calls per inpainting (about 20 minutes per batch of 32 on an AVX2-only
2-core EPYC); the rank agreement is left to the demo's own sweep (`rank_images = 0` here: with the
reference, each ranked patch costs 28 inpaintings); the full one is `configs/camelyon16.py` with a grid around (250, 10, 10). Only the stages the sweep needs run (data,
train_classifier, train_ddpm, explain, repaint_sweep); pointed at the work directory of a finished
demo or study run, those stages are up to date and skipped, so the sweep reuses the trained
classifier, DDPM and heatmaps. Results: `<workdir>/repaint_sweep/sweep.csv`, `sweep.json` and
`cost_quality.png` (network calls against SSIM/LPIPS and against MARD of the CAM ranking).
"""

from pathlib import Path

DEMO_GRID = ((250, 10, 10), (50, 1, 1), (20, 5, 2), ("ddim_repaint", 25, 1, 1), ("ddim_repaint", 20, 5, 2),
             ("ddnm", 5, 1, 1), ("ddnm", 10, 1, 1), ("ddnm", 20, 1, 1), ("ddnm", 20, 3, 2), ("ddnm", 50, 1, 1))
FULL_GRID = (
    (50, 1, 1), (100, 1, 1), (250, 1, 1), (1000, 1, 1),
    (50, 5, 5), (100, 10, 5), (250, 10, 5), (250, 10, 10), (250, 20, 10), (500, 10, 10),
)
STAGES = "data,train_classifier,train_ddpm,explain,repaint_sweep"


def _config_file(name: str):
    from ibo_jax import pipeline

    return pipeline.config_from_file(Path(__file__).with_name(f"{name}.py"))


def get_config(arg=None):
    if arg == "full":
        config = _config_file("camelyon16")
        if "repaint_sweep" not in config:
            from ibo_jax.stages import repaint_sweep

            config.repaint_sweep = repaint_sweep.default_config()
        sweep = config.repaint_sweep
        sweep.grid = FULL_GRID
        sweep.n_images = 64
        sweep.batch_size = 32
        sweep.bf16 = True
        sweep.rank_images = 32  # x 7 methods x 4 masks = 896 inpaintings per setting
        sweep.reference = (250, 10, 10)
    elif arg in (None, "", "demo"):
        config = _config_file("demo")
        sweep = config.repaint_sweep
        sweep.grid, sweep.reference = DEMO_GRID, (250, 10, 10)
        sweep.n_images, sweep.batch_size, sweep.rank_images = 64, 32, 0
        sweep.label = -1  # tumor and normal test patches: 64 boxes, the tumor ones' regions filled too
        sweep.warm_timing = False  # the shared program compiles once (first setting), a rerun would cost 20 min
    else:
        raise ValueError(f"configs/repaint_sweep.py: arg must be 'demo' or 'full', got {arg!r}")
    config.stages = STAGES
    return config
