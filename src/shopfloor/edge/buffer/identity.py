"""The outbox's identity: which numbering its batch sequence numbers belong to.

The platform's ledger stores each ``(edge, seq)`` once. An outbox that is deleted and made
again (a wiped disk, an operator's ``rm -r``) starts its seqs at 1, and without more the
ledger would take its new batches for ones it already has and drop them. So a new outbox
draws a random id when it is created, keeps it in the file ``outbox.id`` beside its data
and sends it with every batch; the platform keys its ledger by edge *and* outbox id.

An outbox that already holds data but no id file was made before ids existed: it keeps
sending without one (the bare edge key it has always used), so its resends after an
upgrade are still recognised as duplicates.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from shopfloor.wire import OUTBOX_ID_PATTERN

__all__ = ["ID_FILE", "is_fresh", "load_or_create_id"]

ID_FILE = "outbox.id"
_ID = re.compile(OUTBOX_ID_PATTERN)
_NOT_DATA = {"quarantine", ID_FILE}


def is_fresh(directory: Path) -> bool:
    """True if ``directory`` holds no outbox data yet (missing, empty, or only quarantine)."""
    try:
        return all(entry.name in _NOT_DATA for entry in directory.iterdir())
    except FileNotFoundError:
        return True


def load_or_create_id(directory: Path, *, fresh: bool) -> str:
    """Return the outbox's id: read it, or make one for a ``fresh`` outbox ("" if legacy).

    The file is written durably (temporary file, fsync, rename, fsync of the folder)
    before the first batch can be appended, so no batch is ever sent under two ids.
    """
    path = directory / ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError):
        text = "?"
    if _ID.match(text):
        return text
    if not fresh:
        return ""  # data from before outbox ids: keep the edge's bare ledger key
    new_id = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="ascii") as f:
        f.write(new_id + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return new_id
