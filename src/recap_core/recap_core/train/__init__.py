"""Training: the ``recap train-value``, ``recap label``, ``recap train-policy`` and ``recap iterate`` commands.

Each ``*_cli`` module holds only its command's arguments and output; the work is in a library module
(``value_training``, ``labelling``, ``policy_training``, ``iteration``), so the commands compose and test
without a shell.
"""
