"""Tiny pyramidal TIFF slides for whole-slide tests (tifffile, openslide's generic-TIFF reader)."""

from __future__ import annotations

import numpy as np


def write_slide(path, seed: int, size: int = 1024, white_quarter: bool = True, blank: bool = False):
    """size x size tissue (synthetic normal patches) with a white right quarter, levels as main
    IFDs down to 1/32, 256-px JPEG tiles (what openslide's generic-TIFF reader accepts); `blank`:
    all white (no tissue window). Returns the level-0 image."""
    import tifffile

    from ibo_jax.data import synthetic

    n = size // 128
    d = synthetic.generate(np.arange(n * n), seed=seed, image_size=128, tumor_fraction=0.0)
    img = d["image"].reshape(n, n, 128, 128, 3).transpose(0, 2, 1, 3, 4).reshape(size, size, 3)
    if white_quarter:
        img[:, 3 * size // 4:] = 245
    if blank:
        img[:] = 245
    with tifffile.TiffWriter(path) as tw:
        f = 1
        while size // f >= 32:
            level = np.ascontiguousarray(img[::f, ::f])
            tw.write(level, tile=(256, 256) if level.shape[0] >= 256 else None, compression="jpeg",
                     photometric="rgb", subfiletype=0 if f == 1 else 1)
            f *= 2
    return img
