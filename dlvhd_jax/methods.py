"""The registry of training methods (`config.method`): one name -> one `Objective`.

The SL-module, DL-VHD and its ablations come from `objectives.CORE`, the UDA baselines from
`baselines.BASELINES`; adding a method is one more entry there.
"""
from __future__ import annotations

from dlvhd_jax import baselines, objectives
from dlvhd_jax.errors import UserInputError

OBJECTIVES: dict[str, objectives.Objective] = {
    o.name: o for o in (*objectives.CORE, *baselines.BASELINES)}


def get_objective(name: str) -> objectives.Objective:
  if name not in OBJECTIVES:
    raise UserInputError(f'config.method={name!r} is unknown; choose one of {sorted(OBJECTIVES)}')
  return OBJECTIVES[name]
