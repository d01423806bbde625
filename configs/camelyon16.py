"""The study's full settings: CAMELYON16 slides, ResNet50 at 224, DDPM T=1000, RePaint (250, 10, 10).

    python -m ibo_jax.launch --config configs/camelyon16.py --workdir runs/camelyon16 \\
        --config.data.slides_dir=/data/camelyon16/images \\
        --config.data.annotations_dir=/data/camelyon16/annotations

Data: 512x512 patches at level 0 (resized to 224 with antialiasing), tumor/normal from the ASAP
XML annotations, split 70/15/15 by slide (the study split by patch: `--config.data.split_by` does
not apply to slides; use a patch-level dataset to reproduce that leak). Classifier: ResNet50,
Adam lr 1e-4, batch 32, 20 epochs. DDPM: UNet 128/256/512, 2 blocks per level, middle attention
with 64-channel heads, AdamW lr 1e-4, batch 16, 35k steps, bf16 on GPU. Evaluation: 100 random
tumor patches of the test split, the seven CAM methods (+ random / oracle controls), masks M1..M4,
six occlusion strategies. Meant for one or more GPUs (`launch/slurm_gpu.sh`) or a TPU pod.
"""

from ibo_jax import pipeline


def get_config(arg=None):
    del arg
    config = pipeline.default_config()
    config.seed = 0
    config.image_size = 224

    d = config.data
    d.source = "wsi"
    d.patch_size = 512  # at level 0, stain-normalized, resized to 224: the study's protocol
    d.level = 0
    d.stain_normalization = "macenko"
    d.split_by = "camelyon16"  # official test_* slides as the test split; 'patch' = the study's (leaky) split
    d.max_per_class = 500  # per slide and class, then ...
    d.total_per_class = 15_214  # ... the study's class totals over all slides
    d.workers = 2
    d.n_examples = 32

    c = config.train_classifier
    c.arch = "resnet50"
    c.model_kwargs = {}
    c.epochs = 20
    c.batch_size = 32
    c.lr = 1e-4
    c.schedule = "constant"
    c.warmup_steps = 0
    c.weight_decay = 0.0
    c.bf16 = True
    c.checkpoint_every = 2000
    c.eval_batch_size = 256

    m = config.train_ddpm
    m.block_out_channels = (128, 256, 512)
    m.layers_per_block = 2
    m.attention_levels = (False, False, False)
    m.mid_attention = True
    m.attention_head_dim = 64
    m.norm_num_groups = 32
    m.T = 1000
    m.beta_schedule = "linear"
    m.beta_start = 1e-4
    m.beta_end = 0.02
    m.lr = 1e-4
    m.batch_size = 16
    m.num_steps = 35_000
    m.warmup_steps = 500
    m.ema_decay = 0.9999
    m.bf16 = True
    m.checkpoint_every = 2500
    m.sample_every = 2500
    m.sample_steps = 100

    e = config.explain
    e.n_images = 100
    e.batch_size = 16

    o = config.occlude
    o.ibo.setting = (250, 10, 10)  # RePaint (t_T, jump_length, jump_n_sample), the study's
    o.ibo.bf16 = True
    o.ibo.batch_size = 64
    o.fixed_strategies = ("blackening", "blurring", "mean", "histogram", "nli", "ibo")

    config.score.n_boot = 2000
    config.ddpm_check.n_samples = 256
    config.ddpm_check.sample_steps = 100
    return config
