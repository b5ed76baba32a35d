"""One RECAP iteration (``recap iterate``): V_k from V_pre, labels from V_k, pi_k from pi_pre, and its record.

The steps are in :func:`run_iteration` and docs/learning.md §5.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from recap_core import outputs
from recap_core.checkpoint import CheckpointError, check_directory, read_config
from recap_core.train.ddp import barrier, init_distributed, shutdown
from recap_core.train.labelling import label_datasets, parse_task_fractions
from recap_core.train.policy_training import LABELLED_MODES, train_policy
from recap_core.train.value_training import train_value


def run_iteration(
    args: argparse.Namespace, mode: str, value_args: argparse.Namespace, policy_args: argparse.Namespace
) -> dict | None:
    """One pass of Algorithm 1's loop body, with its bookkeeping; returns the iteration record on the main
    process (written to ``OUT/iteration.json``), None on the others.

    ``args`` holds the options of ``recap iterate``, ``value_args`` and ``policy_args`` those of the two
    trainings it runs (``--out`` ``OUT/value`` and ``OUT/policy``, ``--init`` V_pre and pi_pre):

    1. ``V_k``: train the value function **from V_pre** on all data ``D`` (with ``--value-folds K`` also its
       K fold models, each from V_pre's model of the same fold);
    2. label ``D`` with ``V_k`` (advantages, per-task thresholds, indicator; cross-fitted: each episode by the
       fold model that did not train on it), only for a ``mode`` that reads labels;
    3. ``pi_k``: train the policy **from pi_pre** in ``mode`` on ``D``.

    Always from the pretrained checkpoints, never from iterate ``k-1``. Both checkpoints record the iteration
    and their parent; ``iteration.json`` ties them together. Iteration 0 is the paper's first fine-tune: the
    policy is trained with the indicator fixed to positive (mode ``sft``).
    """
    data = [str(d) for d in args.data]
    value_dir, policy_dir = value_args.out, policy_args.out
    for option, path, kind in (
        ("--value-pretrained", args.value_pretrained, "value"),
        ("--policy-pretrained", args.policy_pretrained, "policy"),
    ):
        found = read_config(check_directory(path))[0]  # CheckpointError naming the file when it is none
        if found != kind:
            raise CheckpointError(f"{option} {path} is a {found} checkpoint; give a {kind} checkpoint")
    if args.overwrite:
        outputs.refuse_clearing_inputs(
            args.out,
            {
                "--data": list(args.data),
                "--value-pretrained": args.value_pretrained,
                "--policy-pretrained": args.policy_pretrained,
            },
        )
    else:
        outputs.refuse_non_empty(
            args.out,
            hint="choose another --out, or give --overwrite to delete what is "
            "there and train this iteration in its place",
        )
    context = init_distributed(args.device)
    try:
        if context.is_main and args.overwrite:
            outputs.clear_directory(args.out)
        barrier(context)
        value_summary = train_value(value_args, context)
        labels = None
        if context.is_main and mode in LABELLED_MODES:
            labels = label_datasets(
                data,
                value_dir,
                lookahead=args.lookahead,
                positive_fraction=args.positive_fraction,
                task_fractions=parse_task_fractions(args.task_positive_fraction),
                rollout_positives=args.rollout_positives,
                takeover_negative=args.takeover_negative,
                device=args.device,
                progress=not args.no_progress,
            )
        barrier(context)
        policy_summary = train_policy(policy_args, context)
    finally:
        shutdown(context)
    if not context.is_main:
        return None
    record = {
        "iteration": args.iteration,
        "policy_mode": mode,
        "datasets": data,
        "value_pretrained": str(args.value_pretrained),
        "policy_pretrained": str(args.policy_pretrained),
        "value_checkpoint": _checkpoint_id(value_dir),
        "policy_checkpoint": _checkpoint_id(policy_dir),
        "value_final_loss": value_summary["final_loss"],
        "policy_final_loss": policy_summary["final_loss"],
        "labels": labels,
    }
    outputs.write_json(args.out / "iteration.json", record)
    return record


def _checkpoint_id(directory: pathlib.Path) -> str:
    return json.loads((directory / "provenance.json").read_text()).get("checkpoint_id", "")
