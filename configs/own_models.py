"""Your patches, your trained classifier, your diffusers DDPM: the study's evaluation, nothing trained.

    python -m ibo_jax.launch --config configs/own_models.py --workdir runs/mine \\
        --config.data.npz_path=patches.npz \\
        --config.train_classifier.init_weights=resnet50_tumor.pth \\
        --config.train_ddpm.init_weights=my_ddpm_pipeline

- patches: one .npz (image uint8 [N, H, W, 3] at `image_size`, label, tumor_mask, split); only the
  `test` split is explained (the study's 100 tumor patches) and `val` scores the classifier; no
  `train` split is needed.
- classifier: a torchvision-layout checkpoint of `train_classifier.arch` (ResNet50 here, 2 classes,
  1 = tumor), used as is (`epochs = 0`); set `train_classifier.input_mean` / `input_std` if it was
  trained with another input normalization than ImageNet's.
- DDPM: a diffusers UNet2DModel or pipeline folder, used as is (`num_steps = 0`); its noise schedule
  comes from its scheduler config.
Everything else is the study's (`camelyon16.py`): 224 px, seven CAM methods, RePaint (250, 10, 10),
bootstrap intervals. Pass `:cpu` for a quick look on a CPU: 8 patches, RePaint (20, 5, 2), the
cheap CAM methods only.
"""

from pathlib import Path

from ibo_jax import pipeline


def _study_config():
    return pipeline.config_from_file(Path(__file__).with_name("camelyon16.py"))


def get_config(arg=None):
    if arg not in (None, "", "cpu"):
        raise ValueError(f"configs/own_models.py: argument must be empty or 'cpu', got {arg!r}")
    config = _study_config()
    config.data.source = "npz"
    config.data.npz_path = ""  # required: the launcher's error names the field
    config.data.n_examples = 0

    c = config.train_classifier
    c.epochs = 0  # used as is
    c.init_weights = ""

    m = config.train_ddpm
    m.num_steps = 0  # used as is
    m.init_weights = ""
    m.image_size = 0  # the checkpoint's sample_size

    if arg == "cpu":
        config.explain.n_images = 8
        config.explain.methods = ("gradcam", "gradcam++", "xgradcam", "fullgrad", "eigencam")
        o = config.occlude.ibo
        o.t_T, o.jump_length, o.jump_n_sample, o.bf16 = 20, 5, 2, False
        config.train_classifier.bf16 = False
        config.train_ddpm.bf16 = False
        config.score.n_boot = 500
        config.ddpm_check.n_samples = 16
        config.ddpm_check.sample_steps = 25
    return config
