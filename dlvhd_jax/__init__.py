"""dlvhd-jax: DL-VHD and its SL-module (ICCV 2021) in JAX/Flax."""
