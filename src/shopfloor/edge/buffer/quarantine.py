"""Batches the platform refused as invalid, kept aside so they never block the others.

A batch the platform answers with 400/413/415/422 several times in a row is moved here
(the sender decides when) and leaves the outbox. Nothing is thrown away: an operator
lists, exports, retries or deletes quarantined batches, from the command line or with
the functions below, whether the edge runs or not.

Layout, inside the outbox directory::

    quarantine/00000000000000000042.arrow   the batch (the outbox payload)
    quarantine/00000000000000000042.json    seq, points, status, reason, when
    quarantine/retry/…                      batches an operator sent back; the running
                                            edge appends them to the outbox again (with a
                                            new seq) and removes them from here

Retrying appends the batch under a new sequence number (the platform never committed
the old one); if the edge is killed between that append and the removal of the retry
file, the batch is appended twice on the next start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from shopfloor.edge.buffer.base import StoredBatch
from shopfloor.edge.buffer.payload import decode_payload
from shopfloor.wire import encode_json

__all__ = [
    "Quarantine",
    "QuarantinedBatch",
    "delete_quarantined",
    "export_quarantined",
    "list_quarantined",
    "retry_quarantined",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuarantinedBatch:
    """One refused batch.

    Attributes:
        seq: the sequence number it had in the outbox.
        edge: the edge that sent it.
        points: how many points it holds.
        appended_ns: when it entered the outbox.
        refused_ns: when it was quarantined.
        status: the platform's last HTTP status for it.
        reason: the platform's last answer (the error envelope names the field).
        refusals: how many times it was refused.
    """

    seq: int
    edge: str
    points: int
    appended_ns: int
    refused_ns: int
    status: int
    reason: str
    refusals: int


class Quarantine:
    """The quarantine folder.

    Args:
        directory: ``<outbox>/quarantine``; created on first use.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.retry_dir = self.directory / "retry"

    def put(self, batch: StoredBatch, meta: QuarantinedBatch) -> None:
        """Keep ``batch`` (synced to disk before the outbox lets it go)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{batch.seq:020d}"
        _write_synced(stem.with_suffix(".arrow"), batch.payload)
        _write_synced(stem.with_suffix(".json"), json.dumps(asdict(meta)).encode())
        _sync_dir(self.directory)

    def batches(self) -> list[QuarantinedBatch]:
        """Every quarantined batch, oldest seq first (those waiting for retry excluded)."""
        return [m for m, _ in self._entries(self.directory)]

    def export(self, dest: Path, seqs: Sequence[int] | None = None) -> int:
        """Write the batches as JSON lines of the wire's columnar JSON; return how many.

        Each line can be fixed by hand and posted to ``/api/v1/ingest``.
        """
        count = 0
        with Path(dest).open("wb") as out:
            for meta, stem in self._entries(self.directory):
                if seqs is not None and meta.seq not in seqs:
                    continue
                batch = decode_payload(stem.with_suffix(".arrow").read_bytes())
                out.write(encode_json(batch, edge=meta.edge, seq=meta.seq) + b"\n")
                count += 1
        return count

    def retry(self, seqs: Sequence[int] | None = None) -> int:
        """Send batches back to the outbox (the running edge picks them up); return how many."""
        self.retry_dir.mkdir(parents=True, exist_ok=True)
        count = 0
        for meta, stem in self._entries(self.directory):
            if seqs is not None and meta.seq not in seqs:
                continue
            target = self.retry_dir / stem.name
            os.replace(stem.with_suffix(".arrow"), target.with_suffix(".arrow"))
            os.replace(stem.with_suffix(".json"), target.with_suffix(".json"))
            count += 1
        _sync_dir(self.retry_dir)
        return count

    def delete(self, seqs: Sequence[int] | None = None) -> int:
        """Delete batches for good; return how many."""
        count = 0
        for meta, stem in self._entries(self.directory):
            if seqs is not None and meta.seq not in seqs:
                continue
            stem.with_suffix(".json").unlink(missing_ok=True)
            stem.with_suffix(".arrow").unlink(missing_ok=True)
            count += 1
        return count

    def retries(self) -> list[tuple[QuarantinedBatch, Path]]:
        """Batches an operator sent back, with the stem to pass to :meth:`retried`."""
        return self._entries(self.retry_dir)

    def retried(self, stem: Path) -> None:
        """The batch at ``stem`` is back in the outbox: remove its files."""
        stem.with_suffix(".json").unlink(missing_ok=True)
        stem.with_suffix(".arrow").unlink(missing_ok=True)

    def _entries(self, directory: Path) -> list[tuple[QuarantinedBatch, Path]]:
        if not directory.is_dir():
            return []
        out: list[tuple[QuarantinedBatch, Path]] = []
        for path in sorted(directory.glob("*.json")):
            stem = path.with_suffix("")
            if not stem.with_suffix(".arrow").exists():
                continue  # half-written by a crash: the batch is still in the outbox
            try:
                meta = QuarantinedBatch(**json.loads(path.read_bytes()))
            except (ValueError, TypeError) as err:
                logger.warning("quarantine: unreadable %s: %s", path, err)
                continue
            out.append((meta, stem))
        return out


def list_quarantined(directory: Path) -> list[QuarantinedBatch]:
    """List the quarantined batches of the outbox at ``directory``."""
    return Quarantine(_qdir(directory)).batches()


def export_quarantined(directory: Path, dest: Path, seqs: Iterable[int] | None = None) -> int:
    """Export quarantined batches to ``dest`` as JSON lines; return how many."""
    return Quarantine(_qdir(directory)).export(dest, _seqs(seqs))


def retry_quarantined(directory: Path, seqs: Iterable[int] | None = None) -> int:
    """Send quarantined batches back to the outbox; return how many."""
    return Quarantine(_qdir(directory)).retry(_seqs(seqs))


def delete_quarantined(directory: Path, seqs: Iterable[int] | None = None) -> int:
    """Delete quarantined batches; return how many."""
    return Quarantine(_qdir(directory)).delete(_seqs(seqs))


def _qdir(outbox_dir: Path) -> Path:
    return Path(outbox_dir) / "quarantine"


def _seqs(seqs: Iterable[int] | None) -> list[int] | None:
    return None if seqs is None else list(seqs)


def _write_synced(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
