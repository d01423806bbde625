"""The known-answer benchmark grid: which deletion strategy recovers the known ranking of the methods?

    python -m ibo_jax.launch --config configs/benchmark.py --workdir runs/benchmark

The demo's study (configs/demo.py: synthetic patches with counterfactual twins, a tiny DDPM, IBO
with DDNM at 5 network calls) run over a grid, then aggregated (`ibo_jax.grid`):
- 2 data regimes: `data.cue` 'local' (tumor evidence only near the annotation) and 'global'
  (also everywhere else: plausibility and faithfulness differ by construction);
- 2 architectures: the small ResNet and a plain CNN without skip connections (both 8x8 CAM maps);
- 3 classifier seeds (`train_classifier.seed`): data, evaluation patches and DDPM stay fixed;
- every registered strategy on the MoRF curve (the study's), the counterfactual as the known answer,
  and F-Fidelity (`ffidelity`: a fine-tuned copy of each classifier scores 10 stochastic sub-masks of
  each deletion set; the paper's 50 in `:gpu`);
- variant cells on local / resnet_small / seed 0: a second DDPM seed (does IBO's agreement move?)
  and two draws per mask for the random fills (does averaging draws change the verdict?).
Shared stages are computed once: data per regime, the DDPM once for all cells (it reads only the
normal training patches, identical in both regimes), explain/occlude/score/trust per classifier.
`aggregate/report.md` opens with the verdict table.

What was cut to fit the hour on a 2-core CPU, in this order: the fixed-fraction curves (MoRF only,
so no FFid+/FFid-),
the control maps (7 ranked methods, not 11 maps: the verdicts use only the methods), the residual
fills, the model-randomization check, the DDPM check and the RePaint sweep (the demo runs them).

Arguments: '' (the default grid: 48 min measured cold on a 2-core Xeon), 'gpu' (one GPU: every test
tumor patch, 5 seeds, the second DDPM seed in every regime), 'tiny' (seconds per cell: the tests),
'roar' (ROAR / KAR retraining for the grid's first cell: `--workdir runs/benchmark_roar`).
"""

from pathlib import Path

from ibo_jax import grid, pipeline

STAGES = ("data", "train_classifier", "finetune_ffidelity", "train_ddpm", "explain", "occlude", "score", "trust")


def get_config(arg=None):
    if arg not in (None, "", "gpu", "tiny", "roar"):
        raise ValueError(f"configs/benchmark.py: argument must be '', 'gpu', 'tiny' or 'roar', got {arg!r}")
    if arg == "roar":
        # ROAR / KAR for one classifier: the grid's first cell (local regime, resnet_small, seed 0) with its
        # data, classifier, DDPM, explain, occlude, score and trust sections, then `roar` and `report`. No grid:
        #     python -m ibo_jax.launch --config configs/benchmark.py:roar --workdir runs/benchmark_roar
        # (name a workdir: the default, runs/benchmark, is the grid's). train_ddpm stays because occlude
        # declares it as an input (and IBO's ranking is one of those reported beside ROAR's). The sections
        # are the cell's own, so copying a finished grid's cell folder first (`cp -rL runs/benchmark/cells/
        # local-resnet_small-s0/. runs/benchmark_roar/`) reuses its stages and runs `roar` alone. Every one
        # of the ~2,100 training patches is retrained on (limit_train = 0): 1 baseline + 8 maps (7 methods and the random map) x 3 fractions x
        # 2 modes + 8 leakage runs = 57 retrainings of the 3-epoch recipe (the demo's took 67 s on the 2-core
        # CPU: about an hour, plus the maps of all 3,000 patches for 7 methods); --config.roar.limit_train=1000
        # roughly halves the retraining. Resumable per (method, fraction, seed); roar/summary.json times it.
        cell = grid.cells(get_config(None))[0]
        config = cell.config  # every section as the grid's cell has it, so a finished cell's stages are reused
        config.roar = pipeline.STAGES["roar"].load().default_config()
        config.roar.fractions = (0.1, 0.3, 0.5)
        config.roar.modes = ("roar", "kar")
        config.roar.seeds = (0,)
        config.roar.leakage = True
        config.roar.limit_train = 0
        config.report = pipeline.STAGES["report"].load().default_config()  # ROAR / KAR rows in its trust table
        return config
    demo = pipeline.config_from_file(Path(__file__).with_name("demo.py"))
    config = pipeline.default_config(STAGES)
    for k in ("seed", "image_size"):
        config[k] = demo[k]
    for section in STAGES:  # the demo's settings of every stage the grid runs (and the defaults of the rest)
        if section in demo:
            config[section] = demo[section]
    config.grid = grid.default_config()

    config.explain.n_images = 64  # tumor test patches per cell (the same for every seed)
    config.explain.controls = ()  # the verdicts use the ranked methods only
    config.explain.derived_controls = ()  # (the demo's bias controls: they need the fixed-fraction curve)
    config.occlude.curves = ("morf",)
    config.occlude.fixed_strategies = ()
    config.occlude.curve_images = {"ibo": 0}
    config.occlude.residual = False
    config.trust.randomization_images = 0
    # F-Fidelity (a rival remedy): a copy of each classifier fine-tuned with random removal (1 epoch,
    # beta = 0.1), then N stochastic sub-masks of each deletion set, predicted by the fine-tuned copy
    config.occlude.strategies = tuple(config.occlude.strategies) + ("ffidelity",)
    config.occlude.strategy_options.ffidelity = {"n_samples": 10, "alpha": 0.5, "beta": 0.1, "batch_size": 16}
    config.grid.variants = {
        "ddpm_seed1": {"cell": "local-resnet_small-s0", "train_ddpm": {"seed": 1},
                       "occlude": {"strategies": ("counterfactual", "ibo")}},
        "draws2": {"cell": "local-resnet_small-s0", "occlude": {"n_draws": 2,
                                                                "strategies": ("counterfactual", "nli", "ibo")}},
    }

    if arg == "gpu":
        config.explain.n_images = 200
        config.grid.seeds = (0, 1, 2, 3, 4)
        config.train_classifier.epochs = 5
        config.train_ddpm.num_steps = 2000
        config.grid.variants = {
            f"ddpm_seed1_{r}": {"cell": f"{r}-resnet_small-s0", "train_ddpm": {"seed": 1}} for r in config.grid.regimes}
        config.grid.power_ns = (8, 16, 32, 64, 128, 200)
        config.occlude.strategy_options.ffidelity = {"n_samples": 50, "alpha": 0.5, "beta": 0.1, "batch_size": 16}
    if arg == "tiny":  # the tests: a few seconds per stage
        config.data.n_patches = 240
        config.data.n_slides = 8
        config.train_classifier.epochs = 1
        config.train_classifier.batch_size = 32
        config.grid.arch_kwargs = {"resnet_small": {"widths": (8, 8, 16), "layers": (1, 1, 1), "strides": (2, 2, 2)},
                                   "cnn_small": {"widths": (8, 8, 16), "convs": (1, 1, 1), "strides": (2, 2, 2)}}
        config.train_ddpm.block_out_channels = (8, 16)
        config.train_ddpm.attention_levels = (False, False)
        config.train_ddpm.num_steps = 4
        config.train_ddpm.crop_size = 0
        config.train_ddpm.n_samples = 4
        config.train_ddpm.sample_steps = 2
        config.train_ddpm.checkpoint_every = 100
        config.explain.n_images = 6
        config.explain.methods = ("gradcam", "gradcam++", "xgradcam", "layercam")
        config.occlude.n_masks = 3
        config.occlude.strategies = ("blackening", "mean", "counterfactual", "ibo", "ffidelity")
        config.occlude.strategy_options.ffidelity = {"n_samples": 4, "alpha": 0.5, "beta": 0.1, "batch_size": 8}
        config.finetune_ffidelity.batch_size = 32
        config.grid.seeds = (0, 1)
        config.grid.n_boot = 100
        config.grid.power_ns = (3,)
        config.grid.power_repeats = 2
        config.grid.variants = {"ddpm_seed1": {"cell": "local-resnet_small-s0", "train_ddpm": {"seed": 1},
                                               "occlude": {"strategies": ("counterfactual", "ibo")}}}
    return config
