"""ASAP XML annotations (CAMELYON16): polygons -> tumor masks.

    <ASAP_Annotations><Annotations>
      <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="Tumor">
        <Coordinates><Coordinate Order="0" X="1023.5" Y="2047.0"/> ...

Coordinates are level-0 pixels (x right, y down). CAMELYON16 groups: "Tumor", "_0", "_1" are
tumor; "_2" and "Exclusion" are non-tumor holes cut out of tumor regions.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TUMOR_GROUPS = ("Tumor", "_0", "_1", "tumor", "metastases")
EXCLUSION_GROUPS = ("_2", "Exclusion", "exclusion")


@dataclasses.dataclass(frozen=True)
class Polygon:
    name: str
    group: str
    xy: np.ndarray  # float64 [K, 2], level-0 (x, y)


AREA_TYPES = ("Polygon", "Spline", "Rectangle")  # ASAP Types that enclose an area (a Spline's points: a polygon)


def read_asap(path: str | os.PathLike, *, skipped: dict | None = None) -> list[Polygon]:
    """All area annotations of an ASAP XML file (any group); clear errors name the file.

    ASAP's `Type` is honoured: Polygon, Spline and Rectangle enclose an area; Dot, PointSet and
    other types are skipped and counted in `skipped` ({type: count}) when given."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"{path}: not a readable ASAP XML annotation file ({e})") from e
    polys = []
    for ann in root.iter("Annotation"):
        kind = ann.get("Type", "Polygon")
        if kind not in AREA_TYPES:
            if skipped is not None:
                skipped[kind] = skipped.get(kind, 0) + 1
            continue
        coords = sorted(ann.iter("Coordinate"), key=lambda c: int(c.get("Order", 0)))
        try:
            xy = np.array([[float(c.get("X")), float(c.get("Y"))] for c in coords], np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: annotation {ann.get('Name')!r} has a coordinate without "
                             f"numeric X/Y ({e})") from e
        if len(xy) < 3:
            raise ValueError(f"{path}: annotation {ann.get('Name')!r} has {len(xy)} points, "
                             "a polygon needs >= 3")
        polys.append(Polygon(ann.get("Name", ""), ann.get("PartOfGroup", ""), xy.reshape(-1, 2)))
    return polys


def write_asap(path: str | os.PathLike, polygons: Sequence[Polygon]) -> None:
    """Writes polygons as ASAP XML (for tests and for converting other annotations)."""
    from ibo_jax import io as ibo_io

    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    for p in polygons:
        a = ET.SubElement(anns, "Annotation", Name=p.name, Type="Polygon", PartOfGroup=p.group,
                          Color="#F4FA58")
        cs = ET.SubElement(a, "Coordinates")
        for i, (x, y) in enumerate(np.asarray(p.xy)):
            ET.SubElement(cs, "Coordinate", Order=str(i), X=repr(float(x)), Y=repr(float(y)))
    ET.SubElement(root, "AnnotationGroups")
    ibo_io.write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def clip_to_box(xy: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """A polygon [K, 2] clipped to the rectangle (x0, y0, x1, y1) (Sutherland-Hodgman, vectorized
    per clip edge): what lies inside the box is the same region, drawn from a few vertices."""
    x0, y0, x1, y1 = box
    pts = np.asarray(xy, np.float64)
    for axis, bound, keep_ge in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(pts) == 0:
            break
        nxt = np.roll(pts, -1, axis=0)
        a, b = pts[:, axis] - bound, nxt[:, axis] - bound
        if not keep_ge:
            a, b = -a, -b
        ins_a, ins_b = a >= 0, b >= 0
        cross = ins_a != ins_b
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(cross, a / (a - b), 0.0)
        inter = pts + t[:, None] * (nxt - pts)
        out = np.full((len(pts), 2, 2), np.nan)
        out[ins_a, 0] = pts[ins_a]  # a kept vertex ...
        out[cross, 1] = inter[cross]  # ... then the crossing of its outgoing edge
        pts = out.reshape(-1, 2)
        pts = pts[np.isfinite(pts[:, 0])]
    return pts


def rasterize(polygons: Sequence[Polygon], origin: tuple[float, float], size: tuple[int, int], *,
              downsample: float = 1.0, tumor_groups: Sequence[str] = TUMOR_GROUPS,
              exclusion_groups: Sequence[str] = EXCLUSION_GROUPS, clip: bool = True) -> np.ndarray:
    """Tumor mask bool [h, w] of the window whose top-left level-0 corner is origin (x, y),
    `size` = (w, h) pixels at `downsample` level-0 pixels per pixel: tumor polygons minus
    exclusion polygons."""
    w, h = int(size[0]), int(size[1])
    x0, y0 = origin
    # polygons are clipped to the window (plus a margin of 2 px, so edges drawn at the border look
    # the same), so a window costs what its own part of an outline costs
    margin = 2.0 * downsample
    box = (x0 - margin, y0 - margin, x0 + w * downsample + margin, y0 + h * downsample + margin)

    def draw(groups) -> np.ndarray:
        img = Image.new("1", (w, h), 0)
        d = ImageDraw.Draw(img)
        for p in polygons:
            if p.group not in groups:
                continue
            xy = np.asarray(p.xy)
            lo, hi = xy.min(0), xy.max(0)
            if lo[0] > box[2] or lo[1] > box[3] or hi[0] < box[0] or hi[1] < box[1]:
                continue  # the polygon does not reach the window
            inside = lo[0] >= box[0] and lo[1] >= box[1] and hi[0] <= box[2] and hi[1] <= box[3]
            pts = xy if inside or not clip else clip_to_box(xy, box)
            if len(pts) < 3:
                continue
            pts = (pts - [x0, y0]) / downsample
            d.polygon(pts.ravel().tolist(), fill=1, outline=1)
        return np.asarray(img, bool)

    return draw(tumor_groups) & ~draw(exclusion_groups)
