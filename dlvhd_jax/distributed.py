"""Multi-process runs on JAX's own multi-controller runtime (`jax.distributed`).

Every process runs the same program over one global mesh; there is no launcher or parameter
server of our own. `initialize` runs before any other JAX call: with the three launch flags
(a manual or torchrun-style launch), or with none where the cluster can be read from the
environment (SLURM or Open MPI with more than one task, Cloud TPU VMs, GKE / Kubernetes as
JAX detects them); otherwise the run stays single-process.

What a process does alone: every process loads the same (small) feature files and passes
the full arrays; `jax.device_put` keeps each process's addressable shards. Only process 0
writes results, tables, logs and shows a progress bar; checkpoints are written by all
processes together through orbax.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from dlvhd_jax.errors import UserInputError

# A process that dies without a signal: the others fail after this long without its
# heartbeat, instead of hanging in the next collective.
HEARTBEAT_TIMEOUT_S = int(os.environ.get('DLVHD_HEARTBEAT_TIMEOUT_S', '60'))
INIT_TIMEOUT_S = int(os.environ.get('DLVHD_INIT_TIMEOUT_S', '300'))


def detected_cluster() -> str | None:
  """The multi-process cluster this process runs in, or None (a plain machine): a SLURM job
  step or an Open MPI job with more than one task, or what JAX's own cluster detection finds
  (Cloud TPU VM workers, GKE TPU jobs, Kubernetes with the `kubernetes` package)."""
  env = os.environ
  if 'SLURM_JOB_ID' in env and 'SLURM_PROCID' in env:
    return 'slurm' if int(env.get('SLURM_NTASKS', '1') or 1) > 1 else None
  if 'OMPI_COMM_WORLD_SIZE' in env:
    return 'mpi' if int(env['OMPI_COMM_WORLD_SIZE'] or 1) > 1 else None
  try:
    from jax._src import clusters  # pylint: disable=g-import-not-at-top  (no public API yet)
    for cluster in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
      if cluster.__name__ in ('GceTpuCluster', 'GkeTpuCluster', 'K8sCluster') and (
          cluster.is_env_present()):
        return cluster.__name__
  except Exception:  # pylint: disable=broad-except
    pass
  return None


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> bool:
  """Joins the multi-process runtime; -> True if this run has several processes."""
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given) and not all(v is not None for v in given):
    raise UserInputError('--coordinator_address, --num_processes and --process_id go together: '
                         'pass all three (e.g. --coordinator_address=10.0.0.1:1234 '
                         '--num_processes=2 --process_id=0) or none')
  if coordinator_address is None and detected_cluster() is None:
    return False
  if coordinator_address is not None:
    host, _, port = coordinator_address.rpartition(':')
    if not host or not port.isdigit():
      raise UserInputError(f'--coordinator_address={coordinator_address}: use HOST:PORT, '
                           'e.g. 127.0.0.1:1234')
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserInputError(f'--process_id={process_id} with --num_processes={num_processes}: '
                           'need num_processes >= 1 and 0 <= process_id < num_processes')
  # CPU devices of several processes talk through gloo (GPU/TPU use their own collectives).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=INIT_TIMEOUT_S,
                             heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  return jax.process_count() > 1


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def stop_agreed(prev_step: int, step: int, stop_here: bool) -> bool:
  """Whether training stops after the dispatch that ran steps prev_step+1 .. step.

  One process: `stop_here` (a signal it recorded). Several: JAX's preemption sync point,
  which turns a SIGTERM to any process into one agreed step (host-side, through the
  coordination service; no device sync). It must see every step id, so a dispatch of
  several steps asks for each of them; all processes run the same dispatches, so they all
  stop after the same one.
  """
  if jax.process_count() == 1:
    return bool(stop_here)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  hit = False
  for s in range(prev_step + 1, step + 1):
    hit = multihost_utils.reached_preemption_sync_point(s) or hit
  return hit


def fetch(tree):
  """Device arrays -> host numpy, also for arrays sharded over other processes' devices
  (gathered from every process: all processes must call this together)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(one, tree)
