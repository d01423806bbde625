"""The jump schedule against an independent segment-wise derivation and the paper's counts."""

import pytest

from ibo_jax.repaint.schedule import count_schedule, jump_schedule, schedule_cost


def _segments(t_T, j, r):
    """Walk down; on first reaching a jump level b (b < t_T - j, b % j == 0) pass [b, b+j] r-1 more times."""
    times = []
    for t in range(t_T - 1, -2, -1):
        times.append(t)
        if 0 <= t < t_T - j and t % j == 0:
            for _ in range(r - 1):
                times += list(range(t + 1, t + j + 1)) + list(range(t + j - 1, t - 1, -1))
    return times


@pytest.mark.parametrize("t_T,j,r", [(250, 10, 10), (25, 10, 3), (20, 1, 2), (7, 3, 2), (50, 5, 1), (10, 10, 4), (13, 4, 3)])
def test_single_level_matches_segment_walk(t_T, j, r):
    assert jump_schedule(t_T, j, r) == _segments(t_T, j, r)


def test_paper_counts():
    cost = schedule_cost(250, 10, 10)
    assert (cost.unet_calls, cost.undo_steps) == (2410, 2160)
    assert len(jump_schedule(250, 10, 10)) == 2410 + 2160 + 1
    assert schedule_cost(250, 1, 1) == (250, 0, 250)


def test_hand_example():
    assert jump_schedule(6, 2, 2) == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert count_schedule([5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]) == (10, 4, 14)


def test_n_sample_wiggles_and_start_resampling():
    # n_sample adds (n_sample - 1) up-down pairs at every level below t_T - 2
    ts = jump_schedule(5, 1, 1, n_sample=2)
    assert ts == [4, 3, 2, 3, 2, 1, 2, 1, 0, 1, 0, -1]
    # resampling only at levels <= start_resampling (minus the jump length)
    ts = jump_schedule(100, 10, 5, start_resampling=40)
    ups = [a for a, b in zip(ts[:-1], ts[1:]) if b > a]
    assert ups and max(ups) < 40
    assert schedule_cost(100, 10, 5, start_resampling=40).undo_steps == 4 * 4 * 10  # levels 0, 10, 20, 30


def test_nested_jumps_refill_inner_budgets():
    ts = jump_schedule(12, 4, 2, jump2_length=2, jump2_n_sample=2)
    # every transition is +-1 and the walk ends clean
    assert ts[0] == 11 and ts[-1] == -1
    assert all(abs(a - b) == 1 for a, b in zip(ts[:-1], ts[1:]))
    # outer jumps at 4 and 0; inner (2-step) jumps at 0, 2, 4, 6, 8 with budgets refilled after each outer jump
    plain = jump_schedule(12, 4, 2)
    assert count_schedule(ts).undo_steps > count_schedule(plain).undo_steps


@pytest.mark.parametrize("bad", [{"t_T": 0}, {"jump_length": 0}, {"jump_n_sample": 0}])
def test_bad_arguments_name_the_field(bad):
    args = {"t_T": 10, "jump_length": 2, "jump_n_sample": 2} | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        jump_schedule(**args)
