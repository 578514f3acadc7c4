"""Cgroup slice naming, ds01-infra compatible (a leaf: accounting and the executors share it).

Each user's jobs go to ``<root>.slice/<root>-<group>.slice/<root>-<group>-<user>.slice``.
Names are sanitised like ds01-infra's ``username_utils``: drop ``@domain``,
``.`` and any other character outside ``[A-Za-z0-9_:]`` become ``_`` (dashes
too, since they would nest), runs of ``_`` collapse, and names longer than 32
characters are cut to 27 plus ``_`` and 4 hex digits of the md5 of the original.
"""
from __future__ import annotations

import hashlib
import re

from ds01q.errors import ExecutorError

SCHEMES = ("ds01q", "ds01-infra")
MAX_NAME = 32
_VALID_ROOT = re.compile(r"^[A-Za-z0-9_:][A-Za-z0-9_:-]*$")


def sanitize_name(name: str) -> str:
    """A user or group name made safe for a systemd slice component (ds01-infra's rules)."""
    s = name.split("@", 1)[0]
    s = re.sub(r"[^A-Za-z0-9_:]", "_", s.replace(".", "_"))
    s = re.sub(r"_+", "_", s).strip("_")
    if not s:
        return "u" + hashlib.md5(name.encode()).hexdigest()[:8]
    if len(s) > MAX_NAME:
        s = s[:27].rstrip("_") + "_" + hashlib.md5(name.encode()).hexdigest()[:4]
    return s


def _check_root(root: str) -> str:
    if not _VALID_ROOT.match(root):
        raise ExecutorError(f"invalid cgroup root '{root}' (allowed: letters, digits, '_', ':', '-')")
    return root


def slice_name(root: str, group: str, user: str, scheme: str = "ds01q") -> str:
    """The leaf systemd slice of a user's jobs, e.g. ``ds01q-student-h_baker.slice``.

    ``scheme`` ``ds01q`` sanitises both group and user; ``ds01-infra`` leaves
    the group as written (as ds01-infra does), so its existing drop-ins match.
    """
    if scheme not in SCHEMES:
        raise ExecutorError(f"unknown slice naming scheme '{scheme}' (allowed: {', '.join(SCHEMES)})")
    g = sanitize_name(group) if scheme == "ds01q" else group
    return f"{_check_root(root)}-{g}-{sanitize_name(user)}.slice"


def slice_path(name: str) -> str:
    """Where systemd puts a slice: ``a-b-c.slice`` -> ``/a.slice/a-b.slice/a-b-c.slice``."""
    if not name.endswith(".slice") or "/" in name:
        raise ExecutorError(f"'{name}' is not a systemd slice name")
    parts = name[: -len(".slice")].split("-")
    if not all(parts):
        raise ExecutorError(f"'{name}' is not a valid slice name (empty component)")
    return "/" + "/".join("-".join(parts[: i + 1]) + ".slice" for i in range(len(parts)))
