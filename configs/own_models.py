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
- a ViT instead (a pathology foundation model or your fine-tuned ViT): `train_classifier.arch` its
  preset (`models.vit_preset`: uni, uni2_h, virchow, virchow2, h_optimus_0, prov_gigapath, phikon,
  phikon_v2; conch_v1 is refused: its pooling head is open_clip's attentional pooler, not timm's)
  and `init_weights` its timm checkpoint (.bin / .pth / .safetensors) or Hugging Face ViTModel / Dinov2Model checkpoint or folder (Phikon, Phikon-v2):

      --config.train_classifier.arch=uni --config.train_classifier.init_weights=uni/pytorch_model.bin

  A checkpoint with its trained 2-class head is used as is; a foundation backbone without one needs
  its head trained first: pass `:probe` for a linear probe (the backbone frozen, its features computed
  once, only the head trained for 20 epochs; your .npz then needs a `train` split).
  `explain.methods` then also takes the attribution methods (`attribution.METHODS`: rollout,
  grad_rollout, attnlrp, cp_lrp, saliency, integrated_gradients, ...), and `occlude.strategies`
  `token_drop`.
Everything else is the study's (`camelyon16.py`): 224 px, seven CAM methods, RePaint (250, 10, 10),
bootstrap intervals. Pass `:cpu` for a quick look on a CPU: 8 patches, RePaint (20, 5, 2), the
cheap CAM methods only; arguments combine with commas (`:probe,cpu`).
"""

from pathlib import Path

from ibo_jax import pipeline


def _study_config():
    return pipeline.config_from_file(Path(__file__).with_name("camelyon16.py"))


ARGS = ("cpu", "probe")


def get_config(arg=None):
    args = [a for a in (arg or "").split(",") if a]
    if any(a not in ARGS for a in args):
        raise ValueError(f"configs/own_models.py: argument must be empty or some of {ARGS} joined by commas, "
                         f"got {arg!r}")
    config = _study_config()
    config.data.source = "npz"
    config.data.npz_path = ""  # required: the launcher's error names the field
    config.data.n_examples = 0

    c = config.train_classifier
    c.epochs = 0  # used as is
    c.init_weights = ""
    if "probe" in args:  # a ViT backbone without a head: a linear probe on the frozen features
        c.freeze_backbone = True
        c.epochs = 20
        c.batch_size = 64
        c.lr = 1e-3
        c.augment = False  # cached features are not augmented

    m = config.train_ddpm
    m.num_steps = 0  # used as is
    m.init_weights = ""
    m.image_size = 0  # the checkpoint's sample_size

    if "cpu" in args:
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
