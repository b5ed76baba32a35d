"""The one ``recap`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``recap --help`` is instant and ``recap convert`` never loads torch.
Subcommands that need ROS live in the ROS packages (this package never imports rclpy).

A user error (:mod:`recap_core.errors`: a bad path, option or damaged file)
is printed as one line, ``recap COMMAND: message``, with exit status 2; a bug
keeps its traceback.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

from recap_core.errors import UsageError, UserError, one_line

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "station": ("recap_sim.bringup", "run the station nodes in one process (--sim: simulated robot)"),
    "bag": ("recap_recorder.bag_cli", "inspect or repair episode bags (info, repair)"),
    "convert": ("recap_recorder.convert_cli", "convert episode bags into a RECAP dataset"),
    "train-value": ("recap_core.train.value_cli", "train the distributional value function"),
    "label": ("recap_core.train.label_cli", "add value, advantage and indicator columns to a dataset"),
    "train-policy": ("recap_core.train.policy_cli", "train the policy (sft, recap or awr)"),
    "iterate": ("recap_core.train.iterate_cli", "one RECAP iteration: value from V_pre, label, policy from pi_pre"),
    "eval": ("recap_sim.evaluate", "evaluate checkpoints on held-out sim seeds"),
    "eval-pool": ("recap_sim.eval_pool", "pool recap eval reports on disjoint seeds, with paired comparisons"),
    "experiment": ("recap_sim.experiment", "the full RECAP loop in simulation, with a report"),
    "expert-eval": ("recap_sim.expert_eval", "success rate and episode length of the scripted expert per quality"),
    "dataset": ("recap_core.data.cli", "inspect or synthesise RECAP datasets"),
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing its usage and exiting, so ``main`` reports one line."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recap", description="RECAP for ROS 2: stations, bags, datasets, value, policy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _message(exc: BaseException) -> str:
    """One line for a user error: an OSError from a path as ``PATH: what`` (its errno text), else its message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return one_line(f"{exc.filename}: {exc.strerror}")
    return one_line(exc)


# Errors reported as one line: the project's user errors, and paths the user gave that cannot be read or written.
# The train commands also report their ValueErrors so (recap_core.train.common.reports_user_errors).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               FileExistsError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "see `recap --help`"
        print(f"recap: unknown command {name!r}; {hint}", file=sys.stderr)
        return 2
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"recap {name}: its package is not installed ({exc.name}); "
              f"run `make setup` or install the package providing {module_name}", file=sys.stderr)
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
