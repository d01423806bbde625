"""The embedded demo: synthetic H&E-like patches, tiny models, CPU, a few minutes.

    python -m ibo_jax.launch --config configs/demo.py --workdir runs/demo

Every stage registered in `ibo_jax.pipeline.STAGES` runs, in order, with its demo-sized defaults
(each stage's `default_config()`); override any field on the command line, e.g.
`--config.data.n_patches=1000`. An unknown field is an error.
"""

from ibo_jax import pipeline


def get_config(arg=None):
    del arg
    config = pipeline.default_config()
    config.seed = 0
    config.image_size = 64
    return config
