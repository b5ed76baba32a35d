"""Errors a user can act on: the ``recap`` command prints them as one line, not a traceback.

A command raises a :class:`UserError` (or a subclass: ``CheckpointError``,
``DatasetError``) whose message names what is wrong and what to do; ``recap``
prints ``recap <command>: <message>`` on stderr and exits 2. Anything else is a
bug and keeps its traceback. Imports nothing heavy, so every module may use it.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a path, an option, a damaged file); the message says what to do."""


class UsageError(UserError):
    """The command line itself is malformed (what argparse would print with its usage)."""


def one_line(message: object) -> str:
    """``message`` on one line: its lines joined, blank ones dropped (a path or value may hold a newline)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
