"""The one markdown helper of the reports: numbers, intervals and tables.

    num(0.1234)                                   # '0.123'; None or a non-finite float -> 'n/a'
    bracket(0.05, 0.2, 2)                         # '[0.05, 0.20]' (missing ends read 'n/a')
    interval({"lo": 0.05, "hi": 0.2}, 2)          # '[0.05, 0.20]'; no lower end -> 'n/a'
    mean_interval({"mean": 0.12, "lo": 0.05, "hi": 0.2}, 2)   # '0.12 [0.05, 0.20]'
    table(["a", "b"], [[1, 2]])                   # '| a | b |\n|---|---|\n| 1 | 2 |\n'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def num(v: Any, digits: int = 3) -> str:
    """`v` with `digits` decimals; 'n/a' for None or a non-finite float."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def bracket(lo: Any, hi: Any, digits: int = 3) -> str:
    """'[lo, hi]' with `num` for each end."""
    return f"[{num(lo, digits)}, {num(hi, digits)}]"


def interval(d: Mapping | None, digits: int = 3) -> str:
    """'[lo, hi]' of a dict with keys lo, hi; 'n/a' when it is empty or has no lower end."""
    if not d or d.get("lo") is None:
        return "n/a"
    return bracket(d["lo"], d["hi"], digits)


def mean_interval(c: Mapping | None, digits: int = 3) -> str:
    """'mean [lo, hi]' of a dict with keys mean, lo, hi; the mean alone when an end is missing;
    'n/a' without a mean."""
    if not c or c.get("mean") is None:
        return "n/a"
    lo, hi = c.get("lo"), c.get("hi")
    if lo is None or hi is None:
        return num(c["mean"], digits)
    return f"{num(c['mean'], digits)} {bracket(lo, hi, digits)}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table: the header, the separator, one line per row (cells through str)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
