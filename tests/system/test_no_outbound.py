"""`shopfloor demo` connects to nobody but itself, tells systemd when it is up, and runs
under MemoryDenyWriteExecute.

Issue 8: no outbound connection unless configured. The demo runs as a real process while
the test reads its sockets from ``/proc`` (its own and its children's file descriptors,
matched by inode against the kernel's TCP and UDP tables) and calls its API; every socket
that has a remote end must have a loopback one. The same run carries ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC`` as systemd would set them for ``Type=notify`` with ``WatchdogSec=``, and
the test listens on that socket for READY, the watchdog pings and STOPPING. And the process
runs with the kernel's MDWE flag (``PR_SET_MDWE``, what systemd's
``MemoryDenyWriteExecute=yes`` sets on kernels since 6.3): no memory both writable and
executable, which numpy, DuckDB and pyarrow must not need for the deploy/ units to use it.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopfloor.testing.processes import free_port, shopfloor_process
from shopfloor.testing.sdnotify import NotifyListener

pytestmark = pytest.mark.system

SAMPLES = 6
HTTP_TIMEOUT_S = 30.0  # a loaded machine answers slowly; no figure is asserted
PR_SET_MDWE = 65  # linux/prctl.h
PR_MDWE_REFUSE_EXEC_GAIN = 1
_UNSPECIFIED = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}


def _family_of(pid: int) -> list[int]:
    """``pid`` and its descendants (the demo may start helpers)."""
    pids = [pid]
    for current in pids:
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pids += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/{tcp,udp}{,6} writes it: 32-bit words in host order."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _remote_ends(pid: int) -> list[tuple[str, str, int]]:
    """(table, remote address, remote port) of every socket of ``pid`` with a remote end."""
    inodes = _socket_inodes(pid)
    found: list[tuple[str, str, int]] = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, inode = fields[2], fields[9]
            if inode not in inodes:
                continue
            host, port = remote.split(":")
            address = _address(host)
            if address in _UNSPECIFIED:
                continue  # listening, or an unconnected datagram socket
            found.append((table, str(address), int(port, 16)))
    return found


def _is_loopback(text: str) -> bool:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of 127.0.0.1
    return address.is_loopback


def _deny_write_execute() -> None:
    """In the child before exec: the MDWE flag, kept across exec by the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


@pytest.fixture(scope="module")
def mdwe() -> None:
    """Skip where the kernel has no MDWE (before 6.3); prove the flag bites where it has."""
    probe = (
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe],
            preexec_fn=_deny_write_execute,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.SubprocessError as err:
        pytest.skip(f"this kernel has no PR_SET_MDWE: {err}")
    assert result.returncode != 0
    assert "PermissionError" in result.stderr  # a writable, executable page was refused


@pytest.fixture
def notify_listener() -> Iterator[NotifyListener]:
    with NotifyListener.in_temporary_folder() as listener:
        yield listener


def test_demo_connects_only_to_loopback_notifies_systemd_and_needs_no_wx_memory(
    tmp_path: Path, notify_listener: NotifyListener, mdwe: None
) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--no-status"]
    env = {"NOTIFY_SOCKET": notify_listener.path, "WATCHDOG_USEC": "1000000"}
    with shopfloor_process(
        args, port=port, workdir=tmp_path, env=env, preexec_fn=_deny_write_execute
    ) as demo:
        got = notify_listener.wait_for(lambda m: any(x.startswith("READY=1") for x in m), "READY=1")
        assert f"READY=1\nSTATUS=serving http://127.0.0.1:{port}" in got

        tags = demo.get("/api/v1/tags", timeout=HTTP_TIMEOUT_S).json()["tags"]
        tag = next(t["path"] for t in tags if t["path"].endswith("_temp"))
        seen: list[tuple[str, str, int]] = []
        connected = 0
        for _ in range(SAMPLES):  # traffic of every kind while the sockets are read
            with httpx.Client(timeout=HTTP_TIMEOUT_S, headers=demo.headers) as client:
                assert client.get(f"{demo.base_url}/api/v1/tags").status_code == 200
                assert client.get(f"{demo.base_url}/docs").status_code == 200
                # DuckDB's aggregation and numpy's analytics under MDWE
                history = client.get(
                    f"{demo.base_url}/api/v1/tags/{tag}/series",
                    params={"start": "-10m", "bucket": "10s", "agg": "avg,min,max"},
                )
                assert history.status_code == 200, history.text
                client.get(f"{demo.base_url}/healthz")
                for pid in _family_of(demo.proc.pid):
                    ends = _remote_ends(pid)
                    connected += len(ends)
                    seen += ends
        # the test's own keep-alive connection is seen from the server's side
        assert connected > 0, "no connected socket was ever seen: the sampling is broken"
        off_host = {end for end in seen if not _is_loopback(end[1])}
        assert off_host == set(), f"the demo connected beyond this host: {off_host}"

        # fed about twice a second for a 1 s watchdog, also after READY
        got = notify_listener.wait_for(
            lambda m: (
                m[m.index(next(x for x in m if x.startswith("READY=1"))) :].count("WATCHDOG=1") >= 2
            ),
            "WATCHDOG=1 after READY=1",
        )
        assert demo.stop(signal.SIGTERM) == 0, demo.log()
        log = demo.log()
    assert "Traceback" not in log, log
    assert "notify socket" not in log, "a notify message was dropped"
    got = notify_listener.wait_for(lambda m: "STOPPING=1" in m, "STOPPING=1")
    assert set(got) <= {"WATCHDOG=1", "STOPPING=1", f"READY=1\nSTATUS=serving {demo.base_url}"}
