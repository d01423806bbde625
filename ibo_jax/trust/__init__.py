"""Can this verdict be trusted? Known-answer checks of a scored run.

    checks           counterfactual agreement (faithfulness), residual evidence, graded controls,
                     SRG, power (`trust.checks`)
    randomization    the model-parameter randomization cascade (Adebayo et al.)

The stage `trust` runs them and writes `trust/summary.json`; `ibo_jax.reporting.trust` renders
the report's opening section from it.
"""
