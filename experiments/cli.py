"""Command-line plumbing shared by every entry point.

A user error (bad flag, bad config value, missing or corrupt data) is printed as one line
`error: ...` on stderr and the process exits with status 2 — never a traceback.
"""

import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

from fedjax_syn.core.errors import UserError


def fail(message: str) -> NoReturn:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flags parser that reports a bad flag or a stray argument in one line."""
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected arguments: {' '.join(rest[1:])}")
    return rest


def run(main: Callable[[list[str]], None]) -> None:
    """`absl.app.run(main)` with user errors reported as one line."""

    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except UserError as e:
            fail(str(e))

    app.run(guarded, flags_parser=parse_flags)
