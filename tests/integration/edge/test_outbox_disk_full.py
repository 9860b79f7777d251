"""A full or read-only disk under each policy, on a real size-limited tmpfs (needs root).

Each test ends with exact counts: appended = delivered + dropped, the dropped ones are
exactly the oldest, and collection recovers by itself once space is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shopfloor.edge.buffer import DurableOutbox, FullPolicy, SegmentLog
from shopfloor.edge.buffer.payload import encode_payload
from shopfloor.edge.buffer.quarantine import Quarantine
from shopfloor.edge.uplink.forwarder import OutboxUplink
from shopfloor.edge.uplink.http import HttpTransport
from shopfloor.edge.uplink.sender import SenderOptions
from shopfloor.model import PointBatch
from shopfloor.testing.processes import free_port

from .conftest import EDGE_TOKEN, PlatformFactory, stored_ts

T0 = 1_764_000_000_000_000_000
TAG = "acme/p/a/l/c/m/flow"
SEGMENT = 128 * 1024


def _mount(directory: Path, options: str) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        _mount(mount, "size=2m")
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot mount a tmpfs here: {err.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def batch(k: int) -> PointBatch:
    """Batch ``k``: 1500 points (about 40 KB on disk), timestamps unique across batches."""
    n = 1500
    rng = np.random.default_rng(k)
    return PointBatch.from_columns(
        [TAG], np.zeros(n), T0 + k * 10_000 + np.arange(n), rng.random(n), np.zeros(n)
    )


def make_uplink(directory: Path, url: str, policy: FullPolicy) -> OutboxUplink:
    outbox = DurableOutbox(
        SegmentLog(directory, segment_bytes=SEGMENT),
        max_bytes=1 << 30,  # the disk, not the bound, is the limit here
        policy=policy,
        retry=(0.02, 0.2),
    )
    return OutboxUplink(
        outbox,
        HttpTransport(url, edge_id="edge-disk", compression="none", timeout_s=2, token=EDGE_TOKEN),
        edge_id="edge-disk",
        quarantine=Quarantine(directory / "quarantine"),
        options=SenderOptions(retry=(0.05, 0.2)),
        retry=(0.02, 0.2),
    )


async def drain(uplink: OutboxUplink) -> None:
    async def empty() -> None:
        await uplink.wait_ready()
        while uplink.outbox.stats().batches:  # noqa: ASYNC110 - polling the figure under test
            await asyncio.sleep(0.02)

    await asyncio.wait_for(empty(), 20)


async def test_drop_oldest_on_a_full_disk_drops_exactly_the_oldest_and_recovers(
    small_disk: Path, platform: PlatformFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.buffer")
    port = free_port()  # nothing listens yet: everything stays on the small disk
    uplink = make_uplink(small_disk / "outbox", f"http://127.0.0.1:{port}", FullPolicy.DROP_OLDEST)
    await uplink.start()
    appended = 120  # about 5 MB into 2 MiB
    for k in range(appended):
        await uplink.send(batch(k))
    stats = uplink.outbox.stats()
    assert stats.dropped_batches > 0, "the disk filled up"
    assert stats.full
    assert stats.batches + stats.dropped_batches == appended
    assert stats.dropped_points == 1500 * stats.dropped_batches
    kept = list(range(stats.dropped_batches, appended))  # exactly the oldest went
    async with platform(port) as server:
        await drain(uplink)
        ts = await stored_ts(server, TAG)
    await uplink.close()
    expected = np.concatenate([batch(k).ts for k in kept])
    np.testing.assert_array_equal(np.sort(ts), np.sort(expected))
    assert caplog.text.count("outbox disk full") == 1, "logged once, not per drop"
    assert caplog.text.count("disk has room again") == 1
    assert "storage unavailable" not in caplog.text, "drop-oldest handled it: not an error"


async def test_stop_reading_on_a_full_disk_waits_and_resumes_when_space_is_freed(
    small_disk: Path, platform: PlatformFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.buffer")
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 * 1024))  # leave about half a megabyte
    port = free_port()
    uplink = make_uplink(small_disk / "outbox", f"http://127.0.0.1:{port}", FullPolicy.STOP_READING)
    await uplink.start()
    sent = 0
    blocked: asyncio.Task[None] | None = None
    while blocked is None:
        task = asyncio.create_task(uplink.send(batch(sent)))
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if done:
            task.result()
            sent += 1
        else:
            blocked = task
    assert 0 < sent < 20
    assert uplink.outbox.stats().full
    assert uplink.outbox.stats().storage_error is not None
    await asyncio.sleep(0.3)
    assert not blocked.done(), "stop-reading: the append (and so the poll loop) waits"

    filler.unlink()  # an operator frees space: collection resumes by itself
    await asyncio.wait_for(blocked, 10)
    for k in range(sent + 1, sent + 5):
        await uplink.send(batch(k))
    total = sent + 5
    async with platform(port) as server:
        await drain(uplink)
        ts = await stored_ts(server, TAG)
    stats = uplink.outbox.stats()
    await uplink.close()
    assert stats.dropped_batches == 0
    expected = np.concatenate([batch(k).ts for k in range(total)])
    np.testing.assert_array_equal(np.sort(ts), np.sort(expected))
    assert caplog.text.count("outbox storage unavailable") == 1
    assert caplog.text.count("storage writable again") == 1


async def test_a_read_only_disk_at_start_waits_and_recovers_by_itself(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shopfloor.edge.uplink")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)  # noqa: ASYNC221
    uplink = make_uplink(
        small_disk / "outbox", f"http://127.0.0.1:{free_port()}", FullPolicy.DROP_OLDEST
    )
    await uplink.start()
    sending = asyncio.create_task(uplink.send(batch(0)))
    await asyncio.sleep(0.5)
    assert not sending.done(), "no outbox yet: the batch waits, it is not lost"
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)  # noqa: ASYNC221
    await asyncio.wait_for(sending, 10)
    assert uplink.outbox.stats().batches == 1
    await uplink.close()
    assert caplog.text.count("outbox cannot be opened") == 1
    assert "Read-only file system" in caplog.text


async def test_the_sqlite_store_waits_on_a_full_disk_and_resumes_when_space_is_freed(
    small_disk: Path,
) -> None:
    """SQLite cannot delete on a full disk (its WAL needs room): it waits, even under
    drop-oldest, and carries on by itself once space is freed; nothing is lost."""
    from shopfloor.edge.buffer import SqliteLog

    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1536 * 1024))
    outbox = DurableOutbox(SqliteLog(small_disk / "outbox"), max_bytes=1 << 30, retry=(0.02, 0.2))
    await outbox.open()
    appended = 0
    while True:
        task = asyncio.create_task(outbox.append(encode_payload(batch(appended)), points=1500))
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            break
        task.result()
        appended += 1
    assert outbox.stats().storage_error is not None
    filler.unlink()
    await asyncio.wait_for(task, 10)
    appended += 1
    stats = outbox.stats()
    assert (stats.batches, stats.dropped_batches) == (appended, 0)
    waiting = await outbox.peek(1000)
    assert [b.seq for b in waiting] == list(range(1, appended + 1))
    await outbox.close()
