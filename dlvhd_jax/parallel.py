"""The parallel layout, in one place: a 2-D mesh (data, fsdp) over every global device.

Sets are split over both axes (data x fsdp). With `config.mesh.fsdp = k > 1` the parameters
and optimizer state are fully sharded over the k-way `fsdp` axis: each weight matrix along its
largest dimension that k divides (biases, norms and scalars stay replicated), so a device
holds about 1/k of them; XLA inserts the all-gathers before use and the reduce-scatters of
the gradients. With k = 1 (default) everything but the sets is replicated and the step is
plain data parallelism. Feature banks are replicated. The step is written as single-device
code; PRNG draws are sharding-invariant (threefry partitionable), so every layout computes
the same step.
"""
from __future__ import annotations

import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dlvhd_jax.errors import UserInputError

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the set (batch) axis is split over both


NUM_DEVICES_ENV = 'DLVHD_NUM_DEVICES'


def default_devices(local: bool = False) -> list:
  """Every global (or this process's) device; with DLVHD_NUM_DEVICES=n only the first n, in a
  single-process run (a 1- vs n-device comparison in one process: the test suite runs its
  1-, 2- and 8-device meshes over 8 fake CPU devices this way)."""
  devices = jax.local_devices() if local else jax.devices()
  n = os.environ.get(NUM_DEVICES_ENV, '').strip()
  if not n:
    return devices
  if not n.isdigit() or not 1 <= int(n) <= len(devices):
    raise UserInputError(f'{NUM_DEVICES_ENV}={n!r} is not a device count between 1 and '
                         f'{len(devices)}: set it to one or unset it')
  if jax.process_count() > 1:
    raise UserInputError(f'{NUM_DEVICES_ENV} applies to single-process runs; unset it for this '
                         f'{jax.process_count()}-process run')
  return devices[:int(n)]


def make_mesh(devices=None, fsdp: int = 1) -> Mesh:
  """[len(devices) / fsdp, fsdp] mesh over `devices` (default: default_devices())."""
  devices = default_devices() if devices is None else devices
  n, fsdp = len(devices), int(fsdp)
  if fsdp < 1 or n % fsdp:
    raise UserInputError(f'config.mesh.fsdp={fsdp} does not divide the {n} devices: use a '
                         f'divisor of {n}')
  return jax.make_mesh((n // fsdp, fsdp), BATCH_AXES, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (set) axis split across every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replica_batch_sharded(mesh: Mesh) -> NamedSharding:
  """[R, B, ...] outputs of R vmapped replicas: replicas whole, the set axis split."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def shard_sets(x: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: lay out a [B, ...] array of sets over the devices."""
  return jax.lax.with_sharding_constraint(x, batch_sharded(mesh))


def fsdp_spec(shape, fsdp: int, replica_axis: bool = False) -> P:
  """The FSDP layout of one state leaf: its largest dimension that `fsdp` divides, if it is a
  matrix (or more); replicated otherwise. With `replica_axis` the leading axis holds
  independently seeded models and is never split."""
  first = 1 if replica_axis else 0
  dims = list(range(first, len(shape)))
  if fsdp <= 1 or len(dims) < 2:
    return P()
  fits = [d for d in dims if shape[d] % fsdp == 0]
  if not fits:
    return P()
  d = max(fits, key=lambda i: (shape[i], -i))
  return P(*[FSDP_AXIS if i == d else None for i in range(len(shape))])


def state_sharding(mesh: Mesh, tree, replica_axis: bool = False):
  """NamedSharding per leaf of a train state (parameters, optimizer slots, step, key ...)."""
  fsdp = mesh.shape[FSDP_AXIS]
  return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(x.shape, fsdp, replica_axis)), tree)


def check_batch(batch: int, mesh: Mesh, field: str) -> None:
  n = mesh.devices.size
  if batch % n:
    raise UserInputError(f'{field}={batch} is not divisible by the {n} devices of the mesh; '
                         f'use a multiple of {n}')


def bytes_per_device(tree) -> int:
  """Bytes of `tree`'s arrays held on one device (the first addressable one)."""
  dev = jax.local_devices()[0]
  return int(sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
                 if s.device == dev))
