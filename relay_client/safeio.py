"""Opening the files ``--out DIR`` writes without following symlinks.

NAME comes from a stream key, and DIR may be shared: a symlink planted at ``DIR/NAME.flv`` must not
make the app write through it (to another file, another user's, a device). Every output file is
opened with ``O_NOFOLLOW``; JSON documents are written to a unique ``O_EXCL`` temporary and renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

_FLAGS = {
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "r+b": os.O_RDWR,
    "w+b": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; Windows has no symlink-following opens to refuse
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_nofollow(path: str | os.PathLike[str], mode: str) -> BinaryIO:
    """``open(path, mode)`` for ``"ab"``, ``"r+b"`` or ``"w+b"``, refusing a symlink at ``path``.

    A symlink raises ``OSError`` (ELOOP) instead of being followed.
    """
    fd = os.open(path, _FLAGS[mode] | _NOFOLLOW | _CLOEXEC, 0o644)
    try:
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to a unique temporary beside ``path``, then rename it over ``path``.

    A reader (or a crash) never sees half a document; ``mkstemp`` creates the temporary with
    ``O_EXCL`` (never through a symlink) under a random name, so two writers can't collide.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)  # replaces a symlink at path itself, never its target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
