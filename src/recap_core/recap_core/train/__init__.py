"""Training commands: ``recap train-value``, ``recap label``, ``recap train-policy``, ``recap iterate``.

Each ``*_cli`` module exposes ``add_arguments(parser)`` and ``run(args) -> int``
(registered in ``recap_core.cli``) and a plain function doing the work, so the
commands compose (``iterate`` calls the other three) and test without a shell.
"""
