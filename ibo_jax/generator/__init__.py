"""Checks of the generative fill: how well the diffusion model's inpaintings stand in for removed
tissue. Today the sampler sweep (`generator.sweep`: samplers and their settings, cost against
realism, residual evidence and rank agreement); the DDPM's sample check will join later.
"""

from ibo_jax.generator import sweep, sweep_inputs

__all__ = ["sweep", "sweep_inputs"]
