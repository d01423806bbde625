"""The embedded demo: synthetic H&E-like patches, tiny models, CPU, a few minutes.

    python -m ibo_jax.launch --config configs/demo.py --workdir runs/demo

Every stage runs, in order (data, train_classifier, finetune_ffidelity, train_ddpm, ddpm_check,
explain, occlude, score, trust, repaint_sweep, report), with the demo-sized settings below on top of each stage's `default_config()`. Override
any field on the command line, e.g. `--config.explain.n_images=32`; an unknown field is an error.

Reduced on purpose, and stated in the report:
- 3,000 synthetic 64x64 patches on 20 pseudo-slides (split 70/15/15 by slide), tumor evidence
  local to the annotated region, with counterfactual twins (the known faithfulness answer);
- a small ResNet (8x8 CAM maps) trained for 3 epochs;
- a tiny DDPM (16/32/64 channels) trained for 600 steps on random 32 px crops at the patches' own
  scale (v-prediction, min-SNR weights) that inpaints whole 64 px patches;
- IBO with DDNM (5 network calls per inpainting) instead of the study's RePaint (250, 10, 10),
  which needs 2,410: the cheapest setting that `configs/repaint_sweep.py` found non-inferior to it;
- 32 tumor patches in the evaluation set (the study used 100); IBO's fixed-fraction curves on 12;
- a DDPM check with 128 samples and 25 steps (`:full_check`: 256 and 50);
- F-Fidelity (a rival remedy: a copy of the classifier fine-tuned for 1 epoch with 10% of random
  pixels removed) with 5 stochastic sub-masks per deletion set (the paper: 50), on the ranked
  methods only (no control rows), its fixed-fraction curves on 16 patches; the controls derived
  from each map (`<method>_smooth`, `<method>_shuffle_<percent>`) on the fixed-fraction curve only,
  on the first 8 patches (IBO's on 4);
- a two-setting sweep (DDNM (5, 1, 1) against RePaint (10, 5, 2), the previous demo default with
  15 calls), its ranks on 8 patches.
"""

from ibo_jax import pipeline


def get_config(arg=None):
    """arg: '' (the demo) or 'full_check' (the DDPM check with 256 samples and 50 steps)."""
    if arg not in (None, "", "full_check"):
        raise ValueError(f"configs/demo.py: argument must be empty or 'full_check', got {arg!r}")
    stages = list(pipeline.STUDY_STAGES + ("repaint_sweep",))
    stages.insert(stages.index("train_classifier") + 1, "finetune_ffidelity")
    config = pipeline.default_config(stages)
    config.seed = 0
    config.image_size = 64

    config.data.n_patches = 3000
    config.data.n_slides = 20

    config.train_classifier.epochs = 3

    # The DDPM at the patches' own pixel scale: trained on random 32 px crops of the 64 px patches
    # (the fully convolutional UNet then inpaints whole patches), v-prediction with min-SNR weights
    # (measured on 256 samples after 600 steps: KID 0.003 x the tumor-normal gap, 100% called normal;
    # the other routes: whole patches downsampled to 32 px 0.08 x and 76%, native 64 px 0.005 x and
    # 94%, 32 px crops with eps 0.04 x and 55%, the same without mid attention 0.004 x and 100%).
    ddpm = config.train_ddpm
    ddpm.image_size = 0  # native: 64
    ddpm.crop_size = 32
    ddpm.prediction_type = "v_prediction"
    ddpm.loss_weighting = "min_snr"
    ddpm.block_out_channels = (16, 32, 64)
    ddpm.layers_per_block = 1
    ddpm.mid_attention = False  # trained on 8x8 tokens, it would attend over 16x16 when inpainting
    #                             (measured: same sample quality without it, 30% faster per call)
    ddpm.num_steps = 600
    ddpm.batch_size = 16
    ddpm.lr = 2e-3
    ddpm.warmup_steps = 50
    ddpm.ema_decay = 0.99
    ddpm.checkpoint_every = 200  # resume points (each save costs about a second)
    ddpm.sample_steps = 25  # the samples figure, with the DDPM check's steps
    config.ddpm_check.n_samples = 128 if arg != "full_check" else 256
    config.ddpm_check.sample_steps = 25 if arg != "full_check" else 50

    config.explain.n_images = 32
    # the bias controls of every ranked method: Gaussian-smoothed and 30/60/100% shuffled copies,
    # occluded on the fixed-fraction curve only (occlude.control_curves' default)
    config.explain.derived_controls = ("smooth", "shuffle")

    # MoRF (the study's curve) and the fixed-fraction curves, most and least important first (SRG),
    # for every strategy, IBO included; the counterfactual strategy is the faithfulness reference.
    config.occlude.curves = ("morf", "fixed", "fixed_lerf")
    config.occlude.fractions = (0.1, 0.3, 0.6)
    config.occlude.fixed_strategies = ()  # all
    config.occlude.curve_images = {"ibo": 12}  # IBO's fixed-fraction curves on the first 12 patches
    # the cheapest setting non-inferior to RePaint (250, 10, 10) in configs/repaint_sweep.py
    config.occlude.ibo.setting = ("ddnm", 5, 1, 1)
    # F-Fidelity: the fine-tuned copy predicts N = 10 sub-masks of each deletion set (alpha 0.5, at most
    # beta = 10% of the pixels), on the ranked methods only
    config.occlude.strategies = tuple(config.occlude.strategies) + ("ffidelity",)
    config.occlude.strategy_options.ffidelity = {"n_samples": 5, "alpha": 0.5, "beta": 0.1, "batch_size": 32}
    config.occlude.ranked_only = ("ffidelity",)
    config.occlude.curve_images.ffidelity = 16  # its fixed-fraction curves (FFid+, FFid-) on 16 patches
    # the derived bias controls on the first 8 patches (IBO: 4): measured, with F-Fidelity, the demo's
    # cold time grew by ~190 s on the 2-core Xeon without these cuts (budget: 90 s)
    config.occlude.control_images = {"all": 8, "ibo": 4}

    # A small RePaint sweep (configs/repaint_sweep.py runs a larger one): cost against realism
    # on 8 test patches and against the MARD of the CAM ranking on 8 evaluation patches; its
    # entries are settings in the same form as occlude.ibo.setting.
    sweep = config.repaint_sweep
    sweep.grid = (("ddnm", 5, 1, 1), (10, 5, 2))
    sweep.rank_images = 8
    return config
