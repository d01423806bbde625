"""Fast window labels for whole slides: a low-resolution screen of the annotation, then
full-resolution rasterization of the clipped polygons only where the screen cannot decide.

    ann = SlideAnnotations(polygons, downsample=32.0, shape=(h, w))   # once per slide
    share_or_none = ann.screen(x, y, size0)      # 0.0 (no tumor pixel), 1.0 (all tumor) or None
    mask = ann.mask((x, y), (512, 512), downsample=1.0)              # exact, clipped polygons

The screen is conservative: a window it calls tumor-free has no low-resolution pixel touched by
a tumor polygon (fill, outline or vertex) within one pixel of it, and a window it calls all tumor
lies where the tumor fill reaches at least one pixel past any outline and no exclusion polygon
comes near. Everything else goes to full resolution, so labels follow the full-resolution rule;
near a decision threshold the unclipped polygons decide (clipping can move a pixel whose centre
an outline grazes, within float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ibo_jax.data import annotations as ann_lib


def _draw(polys: Sequence[np.ndarray], shape: tuple[int, int], *, fill: bool, outline: bool) -> np.ndarray:
    h, w = shape
    img = Image.new("1", (w, h), 0)
    d = ImageDraw.Draw(img)
    for xy in polys:
        d.polygon(np.asarray(xy, np.float64).ravel().tolist(), fill=1 if fill else None,
                  outline=1 if outline else None)
    return np.array(img, bool)


def _dilate(m: np.ndarray, r: int = 1) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(m, iterations=r) if m.any() else m


class SlideAnnotations:
    """A slide's tumor and exclusion polygons with a low-resolution screen."""

    def __init__(self, polygons: Sequence[ann_lib.Polygon], *, downsample: float, shape: tuple[int, int],
                 tumor_groups: Sequence[str] = ann_lib.TUMOR_GROUPS,
                 exclusion_groups: Sequence[str] = ann_lib.EXCLUSION_GROUPS):
        self.polygons = [p for p in polygons if p.group in tumor_groups or p.group in exclusion_groups]
        self.tumor_groups, self.exclusion_groups = tuple(tumor_groups), tuple(exclusion_groups)
        self.ds = float(downsample)
        self.shape = (int(shape[0]), int(shape[1]))
        tumor = [np.asarray(p.xy) / self.ds for p in self.polygons if p.group in tumor_groups]
        excl = [np.asarray(p.xy) / self.ds for p in self.polygons if p.group in exclusion_groups]
        self.n_vertices = int(sum(len(p.xy) for p in self.polygons))
        self.touched = _dilate(self._touch(tumor))  # any tumor pixel may be here
        edges = _dilate(self._touch(tumor, fill=False))
        self.inside = _draw(tumor, self.shape, fill=True, outline=False) & ~edges  # surely inside a tumor polygon
        self.excluded = _dilate(self._touch(excl))  # an exclusion polygon may reach here

    def _touch(self, polys, fill: bool = True) -> np.ndarray:
        if not polys:
            return np.zeros(self.shape, bool)
        m = _draw(polys, self.shape, fill=fill, outline=True)
        v = np.concatenate(polys).astype(np.int64)  # every vertex's pixel (tiny polygons)
        ok = (v[:, 0] >= 0) & (v[:, 1] >= 0) & (v[:, 0] < self.shape[1]) & (v[:, 1] < self.shape[0])
        m[v[ok, 1], v[ok, 0]] = True
        return m

    def _window(self, x: float, y: float, size0: float) -> tuple[slice, slice]:
        r0, c0 = int(np.floor(y / self.ds)), int(np.floor(x / self.ds))
        r1, c1 = int(np.ceil((y + size0) / self.ds)), int(np.ceil((x + size0) / self.ds))
        return slice(max(r0, 0), max(r1, r0 + 1)), slice(max(c0, 0), max(c1, c0 + 1))

    def screen(self, x: float, y: float, size0: float) -> float | None:
        """Tumor share of the level-0 window [x, x + size0) x [y, y + size0) when the screen can
        decide it (0.0 or 1.0), else None."""
        if not self.polygons:
            return 0.0
        rows, cols = self._window(x, y, size0)
        touched = self.touched[rows, cols]
        if not touched.any():
            return 0.0
        inside = self.inside[rows, cols]
        if inside.size and inside.all() and not self.excluded[rows, cols].any():
            return 1.0
        return None

    def mask(self, origin: tuple[float, float], size: tuple[int, int], *, downsample: float = 1.0,
             clip: bool = True) -> np.ndarray:
        """The window's tumor mask at full resolution (`annotations.rasterize`)."""
        return ann_lib.rasterize(self.polygons, origin, size, downsample=downsample, tumor_groups=self.tumor_groups,
                                 exclusion_groups=self.exclusion_groups, clip=clip)

    def label_window(self, x: float, y: float, patch_size: int, downsample: float, threshold: float
                     ) -> tuple[float, bool]:
        """(tumor share, whether it took a full-resolution rasterization) of one window; near a
        decision (share within 1e-3 of the threshold, or a handful of tumor pixels) the
        unclipped polygons decide, so the label is exactly the full-resolution rule's."""
        share = self.screen(x, y, patch_size * downsample)
        if share is not None:
            return share, False
        m = self.mask((x, y), (patch_size, patch_size), downsample=downsample)
        share = float(m.mean())
        if abs(share - threshold) < 1e-3 or 0 < m.sum() <= 16:
            share = float(self.mask((x, y), (patch_size, patch_size), downsample=downsample, clip=False).mean())
        return share, True
