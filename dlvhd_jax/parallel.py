"""The parallel layout, in one place: a 1-D data mesh over every device.

Sets are split along the `data` axis; parameters, optimizer state and feature banks are
replicated. The step is written as single-device code; `jit` with these shardings inserts
the gradient all-reduce. PRNG draws are sharding-invariant (threefry partitionable), so a
1-device and an N-device run compute the same step.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlvhd_jax.errors import UserInputError

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (set) axis split across devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_sets(x: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: lay out a [B, ...] array of sets along the data axis."""
  return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))


def check_batch(batch: int, mesh: Mesh, field: str) -> None:
  n = mesh.devices.size
  if batch % n:
    raise UserInputError(f'{field}={batch} is not divisible by the {n} devices of the mesh; '
                         f'use a multiple of {n}')
