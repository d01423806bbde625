"""A sampler setting as one value: which sampler and how it walks the jump schedule.

    setting = repaint.Setting("ddnm", t_T=5, jump_length=1, jump_n_sample=1)
    x = repaint.inpaint(eps_fn, x0, keep_mask, key, betas=betas, setting=setting)
    out = occlusion.apply("ibo", images, remove_mask, key=keys, eps_model=m, setting=setting)

A setting holds what `inpaint` takes that is neither data (images, masks, keys, draws) nor model
(network, betas, dtype, mesh): the sampler, the respaced steps t_T, the three jump sizes and their
counts, n_sample, start_resampling, eta (None: the sampler's default), clip and the variance. Its
`name` labels it in tables and figures (distinct for any two different settings), its
`file_stem` names its files, and `network_calls` / `undo_steps` are its exact cost.

In configs a setting is written as a tuple, the same in every stage: (t_T, jump_length,
jump_n_sample) for RePaint or (sampler, t_T, jump_length, jump_n_sample[, eta]); a mapping of
field names (`Setting.from_mapping`) gives the rarer fields too. `Setting.parse` reads any of these.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from ibo_jax.repaint.diffusion import VARIANCES
from ibo_jax.repaint.schedule import ScheduleCost, schedule_cost

_JUMP_DEFAULTS = {"jump2_length": 1, "jump2_n_sample": 1, "jump3_length": 1, "jump3_n_sample": 1, "n_sample": 1,
                  "start_resampling": 100_000_000}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One sampler setting (see the module docstring); invalid fields raise ValueError naming them."""

    sampler: str
    t_T: int
    jump_length: int = 1
    jump_n_sample: int = 1
    eta: float | None = None  # None: the sampler's default (`repaint.SAMPLERS`)
    jump2_length: int = 1
    jump2_n_sample: int = 1
    jump3_length: int = 1
    jump3_n_sample: int = 1
    n_sample: int = 1
    start_resampling: int = 100_000_000
    clip: bool = True
    var: str = "fixed_small"

    def __post_init__(self):
        from ibo_jax.repaint.sampler import SAMPLERS

        if not isinstance(self.sampler, str) or self.sampler not in SAMPLERS:
            _bad("sampler", self.sampler, f"one of {tuple(SAMPLERS)}")
        for f in ("t_T", "jump_length", "jump_n_sample", *_JUMP_DEFAULTS):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1:
                _bad(f, v, "an integer >= 1")
            object.__setattr__(self, f, int(v))
        if self.eta is not None:
            if isinstance(self.eta, bool) or not isinstance(self.eta, numbers.Real) or not (
                    math.isfinite(self.eta) and self.eta >= 0):
                _bad("eta", self.eta, "None (the sampler's default) or a finite number >= 0")
            object.__setattr__(self, "eta", float(self.eta))
        if not isinstance(self.clip, (bool, numbers.Integral)) or self.clip not in (0, 1):
            _bad("clip", self.clip, "True or False")
        object.__setattr__(self, "clip", bool(self.clip))
        if self.var not in VARIANCES:
            _bad("var", self.var, f"one of {VARIANCES}")

    def _extras(self) -> list[tuple[str, Any]]:
        """The fields beyond (sampler, t_T, jump_length, jump_n_sample, eta) off their defaults."""
        out = [(k, getattr(self, k)) for k, d in _JUMP_DEFAULTS.items() if getattr(self, k) != d]
        if not self.clip:
            out.append(("clip", False))
        if self.var != "fixed_small":
            out.append(("var", self.var))
        return out

    @property
    def name(self) -> str:
        """Label, e.g. 'repaint(250,10,10)', 'ddnm(5,1,1,eta=0.5)'; distinct for different settings."""
        eta = "" if self.eta is None else f",eta={self.eta:g}"
        extra = "".join(f",{k}={v}" for k, v in self._extras())
        return f"{self.sampler}({self.t_T},{self.jump_length},{self.jump_n_sample}{eta}{extra})"

    @property
    def file_stem(self) -> str:
        """File-name form of `name`, e.g. 'ddnm_5_1_1_eta0.5'."""
        eta = "" if self.eta is None else f"_eta{self.eta:g}"
        extra = "".join(f"_{k}{v}" for k, v in self._extras())
        return f"{self.sampler}_{self.t_T}_{self.jump_length}_{self.jump_n_sample}{eta}{extra}"

    def cost(self) -> ScheduleCost:
        """Network calls and undo steps of one inpainting (every sampler walks the same schedule)."""
        return schedule_cost(self.t_T, self.jump_length, self.jump_n_sample,
                             **{k: getattr(self, k) for k in _JUMP_DEFAULTS})

    @property
    def network_calls(self) -> int:
        return self.cost().unet_calls

    @property
    def undo_steps(self) -> int:
        return self.cost().undo_steps

    def as_kwargs(self) -> dict[str, Any]:
        """Every field as `repaint.inpaint` keywords."""
        return dataclasses.asdict(self)

    def ibo_kwargs(self) -> dict[str, Any]:
        """The fields `occlusion.ibo` takes as keywords (sampler, t_T, jump_length, jump_n_sample, eta)."""
        return {k: getattr(self, k) for k in ("sampler", "t_T", "jump_length", "jump_n_sample", "eta")}

    @classmethod
    def from_mapping(cls, m: Mapping, where: str = "repaint.Setting") -> Setting:
        """From a dict or ConfigDict of field names. eta < 0 means None (configs cannot hold None
        in a float field); an unknown key is an error naming it."""
        d = dict(m.items())
        unknown = sorted(set(d) - FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; a setting has {sorted(FIELDS)}")
        if "sampler" not in d or "t_T" not in d:
            raise ValueError(f"{where}: a setting needs 'sampler' and 't_T', got {sorted(d)}")
        if isinstance(d.get("eta"), numbers.Real) and not isinstance(d["eta"], bool) and d["eta"] < 0:
            d["eta"] = None
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    @classmethod
    def parse(cls, value: Any, where: str = "setting") -> Setting:
        """A Setting, a mapping (`from_mapping`), (t_T, jump_length, jump_n_sample) for RePaint or
        (sampler, t_T, jump_length, jump_n_sample[, eta])."""
        from ibo_jax.repaint.sampler import SAMPLERS

        if isinstance(value, Setting):
            return value
        if isinstance(value, Mapping) or hasattr(value, "to_dict"):
            return cls.from_mapping(value, where)
        g = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        sampler = g[0] if g and isinstance(g[0], str) else None
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"{where} = {g!r}: sampler {sampler!r} unknown; expected one of {tuple(SAMPLERS)}")
        try:
            if len(g) == 3 and sampler is None:
                return cls("repaint", *(_integer(v) for v in g))
            if len(g) in (4, 5) and sampler is not None:
                eta = None if len(g) == 4 else float(g[4])
                return cls(sampler, *(_integer(v) for v in g[1:4]), eta)
        except (TypeError, ValueError) as e:
            detail = str(e) if str(e) else "not integers"
            raise ValueError(f"{where} = {g!r}: {detail}") from None
        raise ValueError(f"{where} = {g!r}: expected (t_T, jump_length, jump_n_sample) or "
                         f"(sampler, t_T, jump_length, jump_n_sample[, eta]) with sampler in {tuple(SAMPLERS)}")


FIELDS = frozenset(f.name for f in dataclasses.fields(Setting))


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or int(v) != v:
        raise ValueError(f"{v!r} is not an integer")
    return int(v)


def _bad(field: str, value: Any, expected: str) -> None:
    raise ValueError(f"repaint.Setting: {field} must be {expected}, got {value!r}")


def resolve(setting: Any, given: Mapping[str, Any], fn: Callable, where: str) -> Setting:
    """The setting a call runs with, when `setting=` is given beside the function's own keywords.

    given: the function's setting keywords as called. A keyword left at `fn`'s default yields to
    the setting; one that differs from both the default and the setting is an error (give the
    setting or the keyword, not two different values).
    """
    s = Setting.parse(setting, f"{where}: setting")
    params = inspect.signature(fn).parameters
    conflicts = [f"{k}={v!r} (setting has {getattr(s, k)!r})" for k, v in given.items()
                 if v != params[k].default and v != getattr(s, k)]
    if conflicts:
        raise ValueError(f"{where}: setting={s.name} and conflicting keywords {', '.join(conflicts)}; "
                         "give the setting or the keywords")
    return s
