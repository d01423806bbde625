"""The study's protocol on PatchCamelyon (PCam): 96x96 patches of CAMELYON16 at level 2.

    python -m ibo_jax.launch --config configs/pcam.py --workdir runs/pcam \\
        --config.data.pcam_dir=/data/pcam

`pcam_dir` holds PCam's HDF5 files as published (a `.h5.gz` is decompressed once beside itself)
and, optionally, its meta CSVs:
camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (+ _meta.csv). PCam's own splits are
kept; `--config.data.max_per_split=N` takes a seeded random N of each split for a quick run.

Everything else is `configs/camelyon16.py` (the study's settings) at PCam's size:
- image_size 96 (PCam's own); the ResNet50's last stage keeps stride 1, so its CAM maps are 6x6
  (the study's are 7x7 at 224);
- the DDPM (128/256/512, 2 blocks per level, middle attention at 24x24) trains at 96 on PCam's
  normal training patches, with a batch of 64 (a 96 px patch is a fifth of a 224 px one);
- **ground truth**: PCam has no pixel annotations. A patch is tumor when its centre 32x32 region
  holds tumor, and that centre region is the tumor mask the ground-truth IoU and MARD use
  (`data.pcam_mask='center'`): a proxy, weaker than the pathologists' outlines of the study; the
  report says so. The `oracle` control is that region, smoothed.
"""

from pathlib import Path

from ibo_jax import pipeline


def _study_config():
    return pipeline.config_from_file(Path(__file__).with_name("camelyon16.py"))


def get_config(arg=None):
    del arg
    config = _study_config()
    config.image_size = 96

    d = config.data
    d.source = "pcam"
    d.pcam_dir = ""  # required: --config.data.pcam_dir=...
    d.pcam_mask = "center"
    d.max_per_split = 0

    c = config.train_classifier
    c.model_kwargs = {"strides": (1, 2, 2, 1)}  # 96 px -> 6x6 feature maps
    c.epochs = 5
    c.batch_size = 128

    m = config.train_ddpm
    m.image_size = 96
    m.batch_size = 64
    return config
