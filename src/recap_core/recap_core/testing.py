"""Helpers for tests of the ``recap`` command line: run it in-process, require a one-line user error,
parse JSON as strictly as any other tool would."""

from __future__ import annotations

import json

from recap_core import cli


def recap(*argv) -> int:
    """``recap ARGV...`` in this process; returns its exit status."""
    return cli.main([str(a) for a in argv])


def refused(capsys, *argv) -> str:
    """Run a recap command in this process that must fail as a user error; returns its one stderr line."""
    capsys.readouterr()
    code = recap(*argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def strict_json(text: str):
    """Parse JSON as any strict parser would: NaN and infinities are not JSON."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)
