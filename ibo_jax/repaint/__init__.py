"""Inpainting with a DDPM in JAX: DDPM maths, the official jump schedule, one compiled program
for RePaint and the cheaper samplers (`SAMPLERS`: 'repaint', 'ddim_repaint', 'ddnm'), a sampler
setting as one value (`Setting`)."""

from ibo_jax.repaint.diffusion import (
    DiffusionSchedule,
    beta_schedule,
    eps_loss,
    make_schedule,
    p_mean_variance,
    p_sample_step,
    predict_x0,
    q_posterior_mean_variance,
    q_sample,
    respace,
    space_timesteps,
)
from ibo_jax.repaint.sampler import SAMPLERS, inpaint, network_calls
from ibo_jax.repaint.schedule import ScheduleCost, count_schedule, jump_schedule, schedule_cost
from ibo_jax.repaint.setting import Setting

__all__ = [
    "DiffusionSchedule",
    "beta_schedule",
    "eps_loss",
    "make_schedule",
    "p_mean_variance",
    "p_sample_step",
    "predict_x0",
    "q_posterior_mean_variance",
    "q_sample",
    "respace",
    "space_timesteps",
    "inpaint",
    "network_calls",
    "SAMPLERS",
    "Setting",
    "ScheduleCost",
    "count_schedule",
    "jump_schedule",
    "schedule_cost",
]
