"""The errors a run ends with, each with the exit code launch.py returns for it.

Every message is one line that names the file or config field and the fix; launch.py prints
it as `error: <message>` without a traceback.
"""
from __future__ import annotations



class RunError(Exception):
  """Base: an expected way for a run to end, printed as one line."""
  exit_code = 1


class UserInputError(RunError, ValueError):
  """Bad input the user can fix (data files, config values, workdir): exit code 2."""
  exit_code = 2


class NonFiniteError(RunError, ArithmeticError):
  """Training diverged (a non-finite loss) or a model produced non-finite scores: exit code 3.

  Nothing is written for such a run: no checkpoint from a non-finite state, no results.json.
  """
  exit_code = 3


class Preempted(RunError):
  """SIGTERM / SIGINT during training: a checkpoint was saved; exit code 128 + signal."""

  def __init__(self, step: int, signum: int):
    super().__init__(f'preempted at step {step}; rerun the same command to resume')
    self.step = step
    self.signum = signum
    self.exit_code = 128 + int(signum)
