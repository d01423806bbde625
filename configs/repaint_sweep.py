"""RePaint cost against quality over a grid of (t_T, jump_length, jump_n_sample).

    python -m ibo_jax.launch --config configs/repaint_sweep.py --workdir runs/sweep        # demo, CPU
    python -m ibo_jax.launch --config configs/repaint_sweep.py:full --workdir runs/sweep   # GPU/TPU, 224

Runs the stages the sweep needs (data, train_ddpm, repaint_sweep); results in
`<workdir>/repaint_sweep/sweep.csv` and `cost_quality.png`. `:full` uses the study's sizes (224x224,
T = 1000) and a grid around the paper's (250, 10, 10); point `--config.train_ddpm...` at a trained
model or let the pipeline train one. On many hosts the launcher's usual multi-host flags apply.
"""

from ibo_jax import pipeline

DEMO_GRID = ((10, 1, 1), (25, 1, 1), (25, 5, 2), (25, 5, 4))
FULL_GRID = (
    (50, 1, 1), (100, 1, 1), (250, 1, 1), (1000, 1, 1),
    (50, 5, 5), (100, 10, 5), (250, 10, 5), (250, 10, 10), (250, 20, 10), (500, 10, 10),
)


def get_config(arg=None):
    config = pipeline.default_config()
    config.seed = 0
    config.stages = "data,train_ddpm,repaint_sweep"
    if "repaint_sweep" not in config:
        from ibo_jax.stages import repaint_sweep

        config.repaint_sweep = repaint_sweep.default_config()
    sweep = config.repaint_sweep
    if arg == "full":
        config.image_size = 224
        sweep.grid = FULL_GRID
        sweep.n_images = 64
        sweep.batch_size = 32
        sweep.bf16 = True
    elif arg not in (None, "", "demo"):
        raise ValueError(f"configs/repaint_sweep.py: arg must be 'demo' or 'full', got {arg!r}")
    else:
        config.image_size = 64
        sweep.grid = DEMO_GRID
    return config
