"""The ``recap`` subcommands this package provides, registered in setup.py under the
``recap.commands`` entry-point group: ``(module, one-line help)``, the module imported only
when its subcommand runs."""

EVAL = ("recap_experiment.evaluate", "evaluate checkpoints on held-out sim seeds")
EVAL_POOL = ("recap_experiment.eval_pool", "pool recap eval reports on disjoint seeds, with paired comparisons")
EXPERIMENT = ("recap_experiment.experiment", "the full RECAP loop in simulation, with a report")
OPERATOR_EVAL = (
    "recap_experiment.operator_eval",
    "success rate and episode length of the scripted operator per quality",
)
