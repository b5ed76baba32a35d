"""A bag on disk: which bags and MCAP files paths name, its ``metadata.yaml``, and BagError.

A bag is a rosbag2 directory with one MCAP file and ``metadata.yaml`` (no ``metadata.yaml``: the
recorder died before closing it, see :mod:`recap_recorder.bag_repair`); a path may also name its
``.mcap`` file or a directory of bags. :class:`BagError` is the error of every bag operation in
this package: its text says what is wrong and what to do.
"""

from __future__ import annotations

from pathlib import Path

import yaml

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class BagError(Exception):
    """A bag that cannot be used as it is; the text says why and what to do."""


def bag_directory(path: Path) -> Path:
    """The bag ``path`` names: a bag directory stays, and so does any other path; the ``.mcap`` file of a
    bag directory (the one its ``metadata.yaml`` sits next to, or the only one there) means that directory."""
    path = Path(path)
    if path.suffix == ".mcap" and path.is_file():
        parent = path.parent
        if (parent / "metadata.yaml").is_file() or [p.name for p in parent.glob("*.mcap")] == [path.name]:
            return parent
    return path


def expand_bag_paths(paths) -> list[Path]:
    """The bags ``paths`` name: a bag directory stays; a bag's .mcap file means its directory; a directory of
    bags becomes its bags (sorted), so ``recap convert bags/`` works."""
    out: list[Path] = []
    for path in paths:
        path = bag_directory(path)
        if path.is_dir() and not list(path.glob("*.mcap")) and not (path / "metadata.yaml").exists():
            children = sorted(p for p in path.iterdir() if p.is_dir() and list(p.glob("*.mcap")))
            out.extend(children or [path])
        else:
            out.append(path)
    return out


def storage_file(path: Path) -> Path:
    """The MCAP file of a bag directory (or the file itself)."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (expected a rosbag2 directory written by the recorder)")
    if path.is_file():
        if path.suffix != ".mcap":
            raise BagError(f"{path} is not an MCAP file or a rosbag2 directory")
        return path
    files = sorted(path.glob("*.mcap"))
    if not files:
        hint = " (sqlite3 bags are not supported: record with MCAP)" if list(path.glob("*.db3")) else ""
        raise BagError(f"{path} holds no .mcap file{hint}; is it a bag directory?")
    if len(files) > 1:
        raise BagError(
            f"{path} holds {len(files)} .mcap files ({[f.name for f in files]}); one bag per episode has exactly one"
        )
    return files[0]


def read_metadata(path: Path) -> dict:
    """``rosbag2_bagfile_information`` of ``metadata.yaml``; BagError if missing (recorder killed)."""
    meta = Path(path) / "metadata.yaml"
    if Path(path).is_file():
        raise BagError(
            f"{path} is an MCAP file outside a bag directory (no metadata.yaml next to it); "
            f"`recap bag repair {path}` rebuilds a bag from it"
        )
    if not meta.is_file():
        raise BagError(
            f"{path} has no metadata.yaml: it was not closed (recorder killed or crashed). "
            f"Run `recap bag repair {path}` to rebuild it from its MCAP chunks"
        )
    try:
        info = (yaml.load(meta.read_text(), Loader=_YAML_LOADER) or {})["rosbag2_bagfile_information"]
        info["duration"]["nanoseconds"], info["starting_time"]["nanoseconds_since_epoch"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(f"{meta} is not rosbag2 metadata ({exc}); run `recap bag repair {path}`") from exc
    return info
