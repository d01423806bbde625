"""RePaint's resampling ("jump") schedule and its cost.

`jump_schedule` returns the same list as the official RePaint `get_schedule_jump`
(andreas128/RePaint, guided_diffusion/scheduler.py) for every setting. The list holds noise levels
in respaced, 0-based units: it starts at t_T - 1 (pure noise), ends at -1 (clean image), and
consecutive entries differ by one. A step down (t -> t-1) is one reverse DDPM step, i.e. one network
call at t; a step up (t -> t+1) is one "undo" draw from the forward kernel with beta_{t+1}, no
network. With (t_T, jump_length, jump_n_sample) = (250, 10, 10): 2,410 network calls and 2,160
undo steps.

How the list is built: walking down one level at a time, a level j that is a multiple of a jump
length (and below the top segment, j < t_T - length) sends the walk back up by that length, as
long as that level still has jumps left (n_sample - 1 of them). Three nested jump sizes exist;
jumping at an outer size refills the budgets of the inner sizes, and inner sizes are checked first.
`n_sample > 1` adds single up-down wiggles at every level below the top one. `start_resampling`
disables resampling above that level.

ibo_jax follows the official implementation, not diffusers' `RePaintScheduler`, which differs:
- diffusers' step is DDIM-style with `eta` (default 0.0: deterministic steps); the official step is
  ancestral DDPM with the fixed-small posterior variance (eta = 1 in diffusers' formula is close but
  not equal, because diffusers keeps the network's eps after clipping x0). `inpaint(eta=...)` offers
  the diffusers-style step.
- diffusers strides trained timesteps (t = k * T // t_T) without recomputing betas, and its undo
  step uses the trained betas beta[t_last .. t_last + stride - 1], one stride above the level the
  sample is at; the official code respaces (recomputes betas from the kept alpha-bars) and undoes
  with the respaced beta_{t+1}.
- diffusers draws one noise tensor per step, shared by the known part and the reverse step;
  the official code draws them independently. diffusers' list also omits the final -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class ScheduleCost(NamedTuple):
    unet_calls: int  # steps down (t -> t-1)
    undo_steps: int  # steps up (t -> t+1)
    transitions: int  # unet_calls + undo_steps


def _budgets(t_T: int, length: int, n_sample: int) -> dict[int, int]:
    # levels where a jump of `length` may start, each with n_sample - 1 jumps left
    return {level: n_sample - 1 for level in range(0, t_T - length, length)}


def jump_schedule(
    t_T: int,
    jump_length: int,
    jump_n_sample: int,
    jump2_length: int = 1,
    jump2_n_sample: int = 1,
    jump3_length: int = 1,
    jump3_n_sample: int = 1,
    n_sample: int = 1,
    start_resampling: int = 100_000_000,
) -> list[int]:
    """The official RePaint time list (see the module docstring), from t_T - 1 down to -1."""
    for name, value in (("t_T", t_T), ("jump_length", jump_length), ("jump_n_sample", jump_n_sample),
                        ("jump2_length", jump2_length), ("jump2_n_sample", jump2_n_sample),
                        ("jump3_length", jump3_length), ("jump3_n_sample", jump3_n_sample),
                        ("n_sample", n_sample)):
        if int(value) < 1:
            raise ValueError(f"jump_schedule: {name} must be >= 1, got {value}")
    # innermost size first: that is the order in which they are checked at each level
    sizes = [(jump3_length, jump3_n_sample), (jump2_length, jump2_n_sample), (jump_length, jump_n_sample)]
    left = [_budgets(t_T, length, n) for length, n in sizes]
    times: list[int] = []
    t = t_T
    while t >= 1:
        t -= 1
        times.append(t)
        if t + 1 < t_T - 1 and t <= start_resampling:
            for _ in range(n_sample - 1):  # single-step wiggles
                times += [t + 1, t]
        for i, (length, _) in enumerate(sizes):
            if left[i].get(t, 0) > 0 and t <= start_resampling - length:
                left[i][t] -= 1
                times += list(range(t + 1, t + length + 1))
                t += length
                for inner in range(i):  # an outer jump refills every inner budget
                    left[inner] = _budgets(t_T, *sizes[inner])
    times.append(-1)
    _check(times, t_T)
    return times


def _check(times: Sequence[int], t_T: int) -> None:
    if len(times) < 2 or times[0] <= times[1] or times[-1] != -1:
        raise AssertionError(f"jump_schedule: malformed start/end {list(times[:2])} ... {times[-1]}")
    for a, b in zip(times[:-1], times[1:]):
        if abs(a - b) != 1 or not (-1 <= b <= t_T):
            raise AssertionError(f"jump_schedule: bad transition {a} -> {b}")


def count_schedule(times: Sequence[int]) -> ScheduleCost:
    """Network calls (steps down) and undo steps (steps up) of a time list."""
    down = sum(1 for a, b in zip(times[:-1], times[1:]) if b < a)
    up = len(times) - 1 - down
    return ScheduleCost(down, up, down + up)


def schedule_cost(t_T: int, jump_length: int, jump_n_sample: int, **kwargs) -> ScheduleCost:
    """count_schedule(jump_schedule(...)): (250, 10, 10) -> 2,410 calls, 2,160 undo steps."""
    return count_schedule(jump_schedule(t_T, jump_length, jump_n_sample, **kwargs))
