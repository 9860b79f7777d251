"""OPC UA connector: value changes per second through a subscription, and browse/import time.

(a) A server process offers many value changes as fast as it can: first by writing its
    variables (asyncua's server is then the limit), then by queueing changes straight
    into its subscriptions (so the client is the limit). In this process, a bare asyncua
    subscription with a ``datachange_notification`` handler counts notifications (the
    baseline) and the OpcUaConnector counts the points its subscription yields,
    alternating, on the same server in the same run; "offered/s" is the server's rate.
(b) What this process can take in: one publish response of 1,000 changes, decoded by
    asyncua and then turned into a PointBatch by the connector, per change.
(c) Import of a 5,000-variable address space: the connector's batched browse beside a
    naive walk with asyncua's node API (get_children, read_browse_name, read_data_type
    per node), on the same server in the same run.
(d) Server start-up: asyncua's standard Server against :func:`create_server` and the
    simulated plant's server.

Run: ``.venv/bin/python bench/connectors_opcua.py [--seconds 4] [--runs 3] [--variables 1000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import faulthandler
import logging
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from typing import Any

from asyncua import Server, ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from shopfloor.config.connectors.opcua import OpcUaConnectorConfig
from shopfloor.edge.connectors.opcua import OpcUaConnector
from shopfloor.edge.connectors.opcua_browse import browse
from shopfloor.model import PointBatch
from shopfloor.simulator import Plant
from shopfloor.simulator.serve.opcua import PlantOpcUaServer, create_server
from shopfloor.testing.processes import free_port

NS = "urn:bench:opcua"


# ------------------------------------------------------------ server process
@dataclass(frozen=True)
class _Job:
    """What the server process serves, and how it talks back."""

    port: int
    variables: int
    folders: int
    load: str  # none: idle; write: write variables; notify: queue notifications
    rate: float  # notify: changes offered per second
    ready: Event
    stop: Event
    writes: Synchronized[int]


def _serve(job: _Job) -> None:
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve_async(job))


async def _serve_async(job: _Job) -> None:
    port, variables, folders, load = job.port, job.variables, job.folders, job.load
    ready, stop, writes = job.ready, job.stop, job.writes
    server = await create_server(f"opc.tcp://127.0.0.1:{port}", clock=False)
    index = await server.register_namespace(NS)
    nodes: list[Node] = []
    per_folder = -(-variables // folders)
    for f in range(folders):
        folder = await server.nodes.objects.add_object(ua.NodeId(f"Area{f}", index), f"Area{f}")
        for k in range(min(per_folder, variables - len(nodes))):
            node = await folder.add_variable(
                ua.NodeId(f"Area{f}.Value{k}", index), f"Value{k}", 0.0
            )
            if k % 10 == 0:
                await node.add_property(
                    ua.NodeId(f"Area{f}.Value{k}.EURange", index),
                    "EURange",
                    ua.Range(Low=0.0, High=100.0),
                )
            nodes.append(node)
    await server.start()
    ready.set()
    ids = [n.nodeid for n in nodes]
    tick = 0
    parent = os.getppid()
    while not stop.is_set() and os.getppid() == parent:  # never outlive the bench
        tick += 1
        value = ua.Variant(float(tick), ua.VariantType.Double)
        if load == "write":
            done = await _write_all(server, ids, value)
        elif load == "notify":
            started = time.perf_counter()
            done = await _notify_all(server, value)
            # leave the server time to encode what it queued: offer `rate`, not more
            await asyncio.sleep(max(0.0, done / job.rate - (time.perf_counter() - started)))
        else:
            done = 0
        with writes.get_lock():
            writes.value += done
        await asyncio.sleep(0 if done else 0.05)
    await server.stop()


async def _write_all(server: Server, ids: list[ua.NodeId], value: ua.Variant) -> int:
    """The realistic load: every variable written, as a server application does."""
    for node_id in ids:
        await server.write_attribute_value(
            node_id, ua.DataValue(value, SourceTimestamp=dt.datetime.now(dt.UTC))
        )
    return len(ids)


async def _notify_all(server: Server, value: ua.Variant) -> int:
    """A load generator, not a server: a change for every monitored item is queued
    straight into asyncua's subscriptions (internal API), skipping the per-write copy
    and checks of the address space, so the client, not the server, is the limit."""
    done = 0
    stamp = dt.datetime.now(dt.UTC)
    for sub in list(server.iserver.subscription_service.subscriptions.values()):
        items = sub.monitored_item_srv._monitored_items
        for mid, item in list(items.items()):
            note = ua.MonitoredItemNotification(
                ClientHandle=item.client_handle, Value=ua.DataValue(value, SourceTimestamp=stamp)
            )
            await sub.enqueue_datachange_event(mid, note, item.queue_size)
        done += len(items)
    return done


@contextlib.contextmanager
def server_process(
    variables: int, *, folders: int, load: str, rate: float = 0.0
) -> Iterator[tuple[str, Synchronized[int]]]:
    ctx = mp.get_context("spawn")
    port = free_port()
    ready, stop = ctx.Event(), ctx.Event()
    writes: Synchronized[int] = ctx.Value("q", 0)  # type: ignore[assignment]
    proc = ctx.Process(
        target=_serve,
        args=(_Job(port, variables, folders, load, rate, ready, stop, writes),),
        daemon=True,
    )
    proc.start()
    try:
        while not ready.wait(0.2):
            if not proc.is_alive():
                raise RuntimeError("the OPC UA server process died while starting")
        yield f"opc.tcp://127.0.0.1:{port}", writes
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


# ------------------------------------------------------------- (a) changes/s
def connector_config(endpoint: str, variables: int, folders: int) -> OpcUaConnectorConfig:
    per_folder = -(-variables // folders)
    tags = [
        {
            "name": f"v{i}",
            "path": f"bench/area{i // per_folder}/v{i % per_folder}",
            "address": f"nsu={NS};s=Area{i // per_folder}.Value{i % per_folder}",
        }
        for i in range(variables)
    ]
    return OpcUaConnectorConfig.model_validate(
        {
            "name": "bench",
            "endpoint": endpoint,
            "security_policy": "None",
            "allow_insecure": True,
            "publishing_interval": "100ms",
            "sampling_interval": "0ms",
            "queue_size": 100,
            "tags": tags,
        }
    )


async def _window(
    seconds: float, writes: Synchronized[int], count: Callable[[], int]
) -> tuple[float, float]:
    await asyncio.sleep(1.0)  # initial values and warm-up
    c0, w0, t0 = count(), writes.value, time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - t0
    return (count() - c0) / elapsed, (writes.value - w0) / elapsed


async def bare_handler(
    endpoint: str, config: OpcUaConnectorConfig, seconds: float, writes: Synchronized[int]
) -> tuple[float, float]:
    client = Client(endpoint)
    await client.connect()
    received = 0

    class Handler:
        def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
            nonlocal received
            received += 1

        def status_change_notification(self, status: Any) -> None:
            pass

    try:
        sub = await client.create_subscription(100, Handler())
        nodes = [client.get_node(f"ns=2;{t.address.split(';', 1)[1]}") for t in config.tags]
        await sub.subscribe_data_change(nodes, queuesize=100, sampling_interval=0)
        return await _window(seconds, writes, lambda: received)
    finally:
        await asyncio.wait_for(client.disconnect(), 10)


async def through_connector(
    config: OpcUaConnectorConfig, seconds: float, writes: Synchronized[int]
) -> tuple[float, float]:
    connector = OpcUaConnector.from_config(config)
    assert isinstance(connector, OpcUaConnector)
    received = 0

    async def consume() -> None:
        nonlocal received
        async for item in connector.subscribe():
            if isinstance(item, PointBatch):
                received += len(item)

    await connector.connect()
    task = asyncio.create_task(consume(), name="bench-consume")
    try:
        return await _window(seconds, writes, lambda: received)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await connector.close()


def bench_changes(args: argparse.Namespace) -> None:
    folders = max(1, args.variables // 100)
    loads = {
        "write": "server writes its variables (asyncua server-bound)",
        "notify": "changes queued straight into the subscriptions (client-bound)",
    }
    for load, title in loads.items():
        with server_process(args.variables, folders=folders, load=load, rate=args.offer) as (
            endpoint,
            writes,
        ):
            config = connector_config(endpoint, args.variables, folders)
            rows: dict[str, list[tuple[float, float]]] = {
                "bare asyncua handler": [],
                "OpcUaConnector": [],
            }
            for _ in range(args.runs):
                rows["bare asyncua handler"].append(
                    asyncio.run(bare_handler(endpoint, config, args.seconds, writes))
                )
                rows["OpcUaConnector"].append(
                    asyncio.run(through_connector(config, args.seconds, writes))
                )
        print(
            f"\n(a) value changes/s through a subscription, {load}: {title}\n"
            f"    {args.variables} variables, {args.runs} runs of {args.seconds:g} s, medians"
        )
        print(f"{'client':<24}{'changes/s':>12}{'offered/s':>12}{'vs baseline':>14}")
        base = statistics.median(r[0] for r in rows["bare asyncua handler"])
        for name, runs in rows.items():
            rate = statistics.median(r[0] for r in runs)
            offered = statistics.median(r[1] for r in runs)
            print(f"{name:<24}{rate:>12,.0f}{offered:>12,.0f}{rate / base:>13.2f}x")


# ---------------------------------------------------- (b) client-side capacity
def bench_decode(args: argparse.Namespace) -> None:
    n = 1000
    now = dt.datetime.now(dt.UTC)
    notification = ua.DataChangeNotification()
    notification.MonitoredItems = [
        ua.MonitoredItemNotification(
            ClientHandle=i,
            Value=ua.DataValue(
                ua.Variant(float(i), ua.VariantType.Double),
                SourceTimestamp=now,
                ServerTimestamp=now,
            ),
        )
        for i in range(n)
    ]
    response = ua.PublishResponse()
    response.Parameters.NotificationMessage.NotificationData = [notification]
    wire = struct_to_binary(response)
    config = connector_config("opc.tcp://127.0.0.1:1", n, 10)
    connector = OpcUaConnector.from_config(config)
    assert isinstance(connector, OpcUaConnector)
    rounds = 30

    def decode_only() -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            struct_from_binary(ua.PublishResponse, Buffer(wire))
        return (time.perf_counter() - t0) / rounds / n * 1e6

    def decode_and_batch() -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            decoded = struct_from_binary(ua.PublishResponse, Buffer(wire))
            connector._on_publish(decoded.Parameters)  # the callback under test
        return (time.perf_counter() - t0) / rounds / n * 1e6

    runs: dict[str, list[float]] = {"asyncua decode": [], "decode + connector batch": []}
    for _ in range(max(9, args.runs)):  # interleaved, so a busy moment hits both
        runs["asyncua decode"].append(decode_only())
        runs["decode + connector batch"].append(decode_and_batch())
    print(
        f"\n(b) one process's capacity: publish responses of {n} changes "
        f"(medians of {max(9, args.runs)})"
    )
    print(f"{'work':<28}{'µs/change':>12}{'changes/s':>14}")
    for name, values in runs.items():
        us = statistics.median(values)
        print(f"{name:<28}{us:>12.2f}{1e6 / us:>14,.0f}")


# --------------------------------------------------------------- (c) browse
async def naive_browse(endpoint: str) -> int:
    client = Client(endpoint)
    await client.connect()
    found = 0

    async def walk(node: Node) -> None:
        nonlocal found
        for child in await node.get_children():
            if child.nodeid.NamespaceIndex == 0:
                continue
            name = await child.read_browse_name()
            if await child.read_node_class() == ua.NodeClass.Variable:
                await child.read_data_type()
                found += name.Name != "EURange"  # a property, not a tag
            await walk(child)

    try:
        await walk(client.nodes.objects)
    finally:
        await client.disconnect()
    return found


def bench_browse(args: argparse.Namespace) -> None:
    variables = 5000
    with server_process(variables, folders=50, load="none") as (endpoint, _):
        fast: list[float] = []
        slow: list[float] = []
        counts: set[int] = set()
        for _ in range(args.runs):
            t0 = time.perf_counter()
            tags = asyncio.run(browse(endpoint, allow_insecure=True))
            fast.append(time.perf_counter() - t0)
            counts.add(len(tags))
        for _ in range(args.naive_runs):
            t0 = time.perf_counter()
            found = asyncio.run(naive_browse(endpoint))
            slow.append(time.perf_counter() - t0)
            counts.add(found)
    print(
        f"\n(c) import of a {variables}-variable address space "
        f"(medians; naive {args.naive_runs} run(s))"
    )
    print(f"{'method':<44}{'seconds':>10}{'tags':>8}")
    naive, batched = statistics.median(slow), statistics.median(fast)
    print(f"{'naive: get_children + read_* per node':<44}{naive:>10.2f}{variables:>8}")
    print(f"{'shopfloor browse (batched services)':<44}{batched:>10.2f}{variables:>8}")
    print(f"speed-up {naive / batched:.0f}x; tag counts seen: {sorted(counts)}")


# ------------------------------------------------------------- (d) start-up
async def start_standard() -> float:
    t0 = time.perf_counter()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{free_port()}")
    await server.start()
    elapsed = time.perf_counter() - t0
    server.disable_clock()
    await server.stop()
    return elapsed


async def start_slim() -> float:
    t0 = time.perf_counter()
    server = await create_server(f"opc.tcp://127.0.0.1:{free_port()}", clock=False)
    await server.start()
    elapsed = time.perf_counter() - t0
    await server.stop()
    return elapsed


async def start_plant(secure: bool) -> float:
    server = PlantOpcUaServer(Plant.default(seed=1), port=free_port(), secure=secure)
    await server.start()
    await server.stop()
    return server.startup_s


def bench_startup(args: argparse.Namespace) -> None:
    rows = {
        "asyncua Server(), init, start": lambda: asyncio.run(start_standard()),
        "create_server (slim address space)": lambda: asyncio.run(start_slim()),
        "PlantOpcUaServer, no security": lambda: asyncio.run(start_plant(False)),
        "PlantOpcUaServer, encrypted + certificates": lambda: asyncio.run(start_plant(True)),
    }
    print(f"\n(d) server start-up (medians of {args.runs})")
    print(f"{'server':<46}{'seconds':>10}")
    for name, run in rows.items():
        print(f"{name:<46}{statistics.median(run() for _ in range(args.runs)):>10.2f}")


def main() -> None:
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring window of (a)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--naive-runs", type=int, default=1, help="runs of the slow naive browse")
    parser.add_argument("--variables", type=int, default=1000, help="variables changing in (a)")
    parser.add_argument(
        "--offer", type=float, default=30_000, help="changes/s queued by the notify load of (a)"
    )
    parser.add_argument("--only", choices=["changes", "decode", "browse", "startup"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    faulthandler.dump_traceback_later(600, exit=True)  # a hung step shows where it hangs
    steps = {
        "changes": bench_changes,
        "decode": bench_decode,
        "browse": bench_browse,
        "startup": bench_startup,
    }
    for name, step in steps.items():
        if args.only in (None, name):
            step(args)


if __name__ == "__main__":
    main()
