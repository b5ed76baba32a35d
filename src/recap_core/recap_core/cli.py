"""The one ``recap`` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``recap --help`` is instant and ``recap convert`` never loads torch.
Subcommands that need ROS live in the ROS packages (this package never imports rclpy).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recap", description="RECAP for ROS 2: stations, bags, datasets, value, policy.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        parser.error(f"unknown command '{name}'{hint}")
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"recap {name}: its package is not installed ({exc.name}); "
              f"run `make setup` or install the package providing {module_name}", file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"recap {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `recap bag info ... | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141


if __name__ == "__main__":
    sys.exit(main())
