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


def read_asap(path: str | os.PathLike) -> list[Polygon]:
    """All polygons of an ASAP XML file (any group); clear errors name the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ValueError(f"{path}: not a readable ASAP XML annotation file ({e})") from e
    polys = []
    for ann in root.iter("Annotation"):
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


def rasterize(polygons: Sequence[Polygon], origin: tuple[float, float], size: tuple[int, int], *,
              downsample: float = 1.0, tumor_groups: Sequence[str] = TUMOR_GROUPS,
              exclusion_groups: Sequence[str] = EXCLUSION_GROUPS) -> np.ndarray:
    """Tumor mask bool [h, w] of the window whose top-left level-0 corner is origin (x, y),
    `size` = (w, h) pixels at `downsample` level-0 pixels per pixel: tumor polygons minus
    exclusion polygons."""
    w, h = int(size[0]), int(size[1])
    x0, y0 = origin

    def draw(groups) -> np.ndarray:
        img = Image.new("1", (w, h), 0)
        d = ImageDraw.Draw(img)
        for p in polygons:
            if p.group in groups:
                pts = (np.asarray(p.xy) - [x0, y0]) / downsample
                d.polygon([tuple(map(float, q)) for q in pts], fill=1, outline=1)
        return np.asarray(img, bool)

    return draw(tumor_groups) & ~draw(exclusion_groups)
