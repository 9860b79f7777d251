"""What the installed Mosquitto does with a shared subscription when a member dies.

Measured, not assumed (docs/scale-out.md builds on it): two members of ``$share/g/...``
with manual acknowledgement; member A never acknowledges and is killed with SIGKILL
holding its messages; then more messages are published, and A comes back under its id.

* Messages are dealt round robin, one per member in turn.
* Persistent session (expiry 300 s): A's unacknowledged messages stay in A's session,
  and so does every second new message while A is away; all of them reach A when it
  comes back, none reaches B. Nothing is lost, but half the load waits for A.
* Session ending with the connection (expiry 0): B gets every new message at once; A's
  unacknowledged messages are dropped by the broker — neither B nor the new A gets
  them. Shopfloor's edges send such batches again after their answer timeout.

And Receive Maximum: kept to while nothing is acknowledged, exceeded (everything queued
for the client is sent) once acknowledgements flow.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.testing.mosquitto import Mosquitto

_MEMBER = """
import sys
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
port, cid, expiry, ack = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "ack"
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
c.manual_ack_set(True)
def on_message(client, userdata, message):
    print(message.payload.decode(), flush=True)
    if ack:
        client.ack(message.mid, message.qos)
def on_subscribe(client, userdata, mid, codes, properties):
    print("subscribed", flush=True)
c.on_message = on_message
c.on_subscribe = on_subscribe
p = Properties(PacketTypes.CONNECT)
p.SessionExpiryInterval = expiry
p.ReceiveMaximum = 8
c.connect("127.0.0.1", port, clean_start=False, properties=p)
c.subscribe("$share/g/t/#", qos=1)
c.loop_forever()
"""


class _Member:
    def __init__(self, folder: Path, port: int, name: str, *, expiry: int, ack: bool) -> None:
        self.log = folder / f"{name}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _MEMBER,
                    str(port),
                    name,
                    str(expiry),
                    "ack" if ack else "-",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while "subscribed" not in self.got_text():
            assert self.proc.poll() is None, self.got_text()
            assert time.monotonic() < deadline, self.got_text()
            time.sleep(0.05)

    def got_text(self) -> str:
        return self.log.read_text(errors="replace")

    def got(self) -> list[str]:
        return [line for line in self.got_text().split() if line.startswith("m")]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def _publish(port: int, numbers: range) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for n in numbers:
            client.publish("t/x", f"m{n}", qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _play(folder: Path, broker: Mosquitto, *, expiry: int) -> tuple[set[str], set[str], set[str]]:
    """What A got before it died, what B got, what A got after coming back."""
    a = _Member(folder, broker.port, "a", expiry=expiry, ack=False)
    b = _Member(folder, broker.port, "b", expiry=expiry, ack=True)
    members = [a, b]
    try:
        _publish(broker.port, range(10))
        time.sleep(0.5)
        a.kill()
        time.sleep(0.5)
        _publish(broker.port, range(10, 20))
        time.sleep(0.5)
        before = set(a.got())
        back = _Member(folder, broker.port, "a", expiry=expiry, ack=True)
        members.append(back)
        time.sleep(1.0)
        return before, set(b.got()), set(back.got())
    finally:
        for member in members:
            member.kill()


def _ms(numbers: range) -> set[str]:
    return {f"m{n}" for n in numbers}


def test_a_dead_members_persistent_session_keeps_its_share(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto
    before, b, back = _play(tmp_path, broker, expiry=300)
    assert before == _ms(range(0, 10, 2))  # round robin
    assert b == _ms(range(1, 20, 2))  # B still gets only every second message
    assert back == _ms(range(0, 20, 2))  # A's unacked ones and its share while away


def test_a_dead_members_messages_are_dropped_when_its_session_ends_with_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    broker = mosquitto
    before, b, back = _play(tmp_path, broker, expiry=0)
    assert before == _ms(range(0, 10, 2))
    assert b == _ms(range(1, 10, 2)) | _ms(range(10, 20))  # B takes over at once
    assert back == set()  # A's unacknowledged messages went with its session


def test_mosquitto_exceeds_receive_maximum_once_acknowledgements_flow(
    mosquitto: Mosquitto,
) -> None:
    """Why ``[ingest.mqtt] max_queued`` exists: with nothing acknowledged Mosquitto keeps
    to Receive Maximum, but once PUBACKs flow it sends what it queued for the client."""
    unacked: list[int] = []
    peak = 0
    lock = threading.Lock()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="w", protocol=paho.MQTTv5)
    client.manual_ack_set(True)

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        nonlocal peak
        with lock:
            unacked.append(message.mid)
            peak = max(peak, len(unacked))

    client.on_message = on_message
    connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    connect.ReceiveMaximum = 5
    client.connect("127.0.0.1", mosquitto.port, properties=connect)
    client.subscribe("$share/g/t/#", qos=1)
    client.loop_start()
    try:
        time.sleep(0.3)
        _publish(mosquitto.port, range(200))
        time.sleep(0.3)
        with lock:
            assert peak == 5  # kept to, while nothing is acknowledged
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            with lock:
                if unacked:
                    client.ack(unacked.pop(0), 1)  # in order, one every 10 ms
            time.sleep(0.01)
        with lock:
            assert peak > 50, peak  # measured: about 160 of 200
    finally:
        client.disconnect()
        client.loop_stop()
