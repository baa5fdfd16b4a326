"""Output files of the CLI: checked before the work, written atomically after it.

`check_writable` runs before any work, so a bad `-o` or `--plot` costs nothing. It
creates (and removes) a temporary file in the target's folder, since `os.access` answers
"writable" for root on read-only file systems such as /proc. `atomic_output` writes
through a temporary file in the same folder, renamed over the target only when the writer
finished, so a failure leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from marconi.errors import UserError


class OutputError(UserError):
    """An output path (`-o`, `--plot`) that cannot be written."""


def check_writable(path: str, flag: str, example: str) -> None:
    """Fail now, not after the work, when `path` cannot be written."""
    target = Path(path)
    where = f"{flag} {path}"
    if target.is_dir():
        raise OutputError(where, f"cannot write: is a directory; expected a file path, "
                          f"e.g. {example}")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(where, f"cannot write: no such directory {str(folder)!r}; "
                          "expected a file in an existing folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(where, f"cannot write: creating a file in {str(folder)!r} failed "
                          f"({e.strerror or e}); expected a writable folder") from None
    os.close(fd)
    os.unlink(probe)


@contextlib.contextmanager
def atomic_output(path: str, flag: str) -> Iterator[str]:
    """Yield a temporary path beside `path` to write; on success rename it over `path`,
    on any failure remove it. The temporary name keeps `path`'s suffix (matplotlib picks
    the image format from it)."""
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix,
                                   dir=target.parent)
    except OSError as e:
        raise OutputError(f"{flag} {path}", f"cannot write: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)                # mkstemp makes 0600; outputs are not secrets
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
