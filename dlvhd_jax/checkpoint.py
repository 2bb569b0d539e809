"""Orbax checkpoints of the train state: atomic saves, resume from the latest step."""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves / restores a pytree of arrays under <workdir>/checkpoints/<step>."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, tree) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(tree))

  def restore(self, tree_like, step: int | None = None):
    """Restores into arrays with the shapes, dtypes and shardings of `tree_like`."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, tree_like)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
