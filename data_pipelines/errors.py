"""The one error type for user mistakes in data and config: launch.py prints it as one line."""


class UserInputError(ValueError):
  """Bad input the user can fix; the message names the file or config field and the fix."""
