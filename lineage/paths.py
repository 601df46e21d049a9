"""Path containment: every path that comes from data (a DVC listing, an S3 key, a registry
row, a manifest row) is checked before anything is read or written with it.

A dataset names its files; an attacker who can write one store (the DVC remote, the source
bucket, the registry CSV) chooses those names. ``../../etc/cron.d/x`` in a `.dir` listing
would make `dvc pull` write outside the workspace before a single hash is checked, so the
names are validated first, and a name that fails is an error naming the entry: nothing is
written outside the target.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lineage.errors import LineageError


class PathContainmentError(LineageError):
    """A path named by data would leave the directory it belongs to."""


def safe_relpath(relpath: str, what: str) -> str:
    """`relpath` when it is a plain relative POSIX path inside its root; otherwise an error
    naming `what` (e.g. ``"entry 3 of the DVC listing abc.dir"``)."""
    problem = _problem(relpath)
    if problem is not None:
        raise PathContainmentError(
            f"{what}: path {relpath!r} {problem}",
            "the data names a file outside its directory: it was crafted or corrupted; "
            "nothing was written. Do not use this data; restore it from a trusted copy",
        )
    return relpath


def _problem(relpath: str) -> str | None:
    if not isinstance(relpath, str) or not relpath:
        return "is empty"
    if "\x00" in relpath:
        return "contains a NUL byte"
    if "\\" in relpath:
        return "contains a backslash (only POSIX separators are allowed)"
    if relpath.startswith("/"):
        return "is absolute"
    if len(relpath) > 1 and relpath[1] == ":":
        return "starts with a drive letter"
    parts = relpath.split("/")
    if any(part == ".." for part in parts):
        return "climbs out of its directory ('..')"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' segment"
    return None


def contained(root: Path, relpath: str, what: str) -> Path:
    """``root / relpath``, checked twice: the name itself (`safe_relpath`), and where it
    really leads once symlinks already on disk are followed (a link inside the root that
    points outside is refused as well)."""
    safe_relpath(relpath, what)
    target = root / PurePosixPath(relpath)
    real_root = root.resolve()
    if not target.resolve().is_relative_to(real_root):
        raise PathContainmentError(
            f"{what}: path {relpath!r} leads outside {root} through a symbolic link",
            "remove the link, or copy the data it points to into the directory",
        )
    return target
