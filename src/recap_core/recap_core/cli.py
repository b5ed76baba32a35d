"""The one ``recap`` command line: every installed package's subcommands, each imported only when it runs.

How a package registers a subcommand: :func:`commands`; how a user error is reported: :func:`main`.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
from importlib.metadata import entry_points

from recap_core.errors import UsageError, UserError, one_line

GROUP = "recap.commands"


def commands() -> dict[str, tuple[str, str]]:
    """name -> (module, one-line help) of every installed subcommand, sorted by name.

    Each package registers its subcommands under the ``recap.commands`` entry-point group (as ros2cli's verbs
    are registered): the entry point names the subcommand and points at a ``(module, one-line help)`` pair in
    the package's light ``commands`` module. The subcommand's module exposes ``add_arguments(parser)`` and
    ``run(args) -> int`` and is imported only when it runs, so ``recap --help`` is instant and ``recap
    convert`` never loads torch. This package names no package built on it.
    """
    found: dict[str, tuple[str, str]] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found:
            continue  # the same distribution seen twice on sys.path
        try:
            module, help_text = ep.load()
        except Exception as exc:  # a broken plugin must not take the other commands down
            module, help_text = "", f"(cannot load: {one_line(exc)})"
        found[ep.name] = (module, help_text)
    return dict(sorted(found.items()))


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing its usage and exiting, so ``main`` reports one line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser(available: dict[str, tuple[str, str]]) -> argparse.ArgumentParser:
    parser = _Parser(prog="recap", description="RECAP for ROS 2: stations, bags, datasets, value, policy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in available.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _message(exc: BaseException) -> str:
    """One line for a user error: an OSError from a path as ``PATH: what`` (its errno text), else its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return one_line(f"{exc.filename}: {exc.strerror}")
    return one_line(exc)


# Errors reported as one line: the project's user errors, and paths the user gave that cannot be read or written.
# The train commands also report their ValueErrors so (recap_core.train.common.reports_user_errors).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def main(argv: list[str] | None = None) -> int:
    """Run ``recap COMMAND ...``; returns the exit status.

    A user error (:mod:`recap_core.errors`: a bad path, option or damaged file) is printed as one line,
    ``recap COMMAND: message``, with exit status 2; a bug keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    available = commands()
    parser = build_parser(available)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in available or not available[name][0]:
        if name in available:
            print(f"recap {name}: {available[name][1]}; reinstall its package", file=sys.stderr)
            return 2
        close = difflib.get_close_matches(name, available, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see `recap --help`"
        print(f"recap: unknown command {name!r}; {hint}", file=sys.stderr)
        return 2
    module_name, help_text = available[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"recap {name}: its package is not installed ({exc.name}); "
            f"run `make setup` or install the package providing {module_name}",
            file=sys.stderr,
        )
        return 2
    sub = _Parser(prog=f"recap {name}", description=help_text)
    module.add_arguments(sub)
    try:
        args = sub.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `recap bag info ... | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except USER_ERRORS as exc:
        print(f"recap {name}: {_message(exc)}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if not isinstance(exc.code, str):  # --help, or a command's own exit status
            raise
        print(f"recap {name}: {one_line(exc.code)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
