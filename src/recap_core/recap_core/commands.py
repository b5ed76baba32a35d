"""The ``recap`` subcommands this package provides, registered in setup.py under the
``recap.commands`` entry-point group: ``(module, one-line help)``, the module imported only
when its subcommand runs."""

TRAIN_VALUE = ("recap_core.train.value_cli", "train the distributional value function")
LABEL = ("recap_core.train.label_cli", "add value, advantage and indicator columns to a dataset")
TRAIN_POLICY = ("recap_core.train.policy_cli", "train the policy (sft, recap, awr or bc)")
ITERATE = ("recap_core.train.iterate_cli", "one RECAP iteration: value from V_pre, label, policy from pi_pre")
DATASET = ("recap_core.data.cli", "inspect or synthesise RECAP datasets")
EXPORT = ("recap_core.export_cli", "write a RECAP-trained pi0/pi0.5/SmolVLA policy in LeRobot's or openpi's layout")
SERVE = ("recap_core.serving.serve_cli", "serve a policy checkpoint over openpi's websocket protocol")
