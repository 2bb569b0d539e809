"""UDA baselines of the paper (issue 5); registered into dlvhd_jax.objectives."""
