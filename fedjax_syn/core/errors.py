"""User-facing errors.

A `UserError` is bad input (a flag, a config value, a missing or corrupt data file). Entry points
print its message as a single line and exit with status 2, never with a traceback.
"""


class UserError(ValueError):
    """Bad input from the user; the message names the bad value and what is allowed."""


def check(condition: bool, message: str) -> None:
    """Raises `UserError(message)` unless `condition` holds."""
    if not condition:
        raise UserError(message)


def check_choice(what: str, value: object, allowed) -> None:
    """Raises a `UserError` naming `value` and the allowed choices."""
    allowed = sorted(allowed)
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")


class NonFiniteError(UserError):
    """A run's update became NaN or Inf and its config says to stop (`on_nonfinite="stop"`).

    A `UserError`: the cure is in the config (a smaller learning rate, clean data, or
    `on_nonfinite="drop"`), so entry points report it in one line like any bad input."""
