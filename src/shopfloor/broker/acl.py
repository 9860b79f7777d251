"""Who may publish and read which topic: the broker ACL of the MQTT transport.

The rules follow the topic table of docs/broker.md. An edge may publish only its own
``batches``, ``tags`` and ``status`` and read only its own ``acks``; only the platform's
users read every edge's messages (also as a member of a ``$share/<group>/`` shared
subscription) and publish the answers on ``acks`` — the one message that makes an edge drop
data from its outbox, so a forged one would lose data. Optionally the platform's users
also publish the Unified Namespace and act as a Sparkplug B edge node.

Mosquitto's ACL file grants nothing that is not written: a user not listed may do
nothing, a topic not listed is refused (a QoS 1 PUBLISH gets PUBACK "not authorized",
reason code 0x87, and is not delivered; a read is filtered out at delivery).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from shopfloor.config.mqtt_link import (
    COMMANDS,
    TOPIC_ACKS,
    TOPIC_BATCHES,
    TOPIC_RESULTS,
    TOPIC_STATUS,
    TOPIC_TAGS,
    TOPIC_WRITABLES,
)
from shopfloor.sparkplug.codec import NAMESPACE

__all__ = [
    "EDGE_ID",
    "Grant",
    "check_edge_id",
    "check_root",
    "check_sparkplug_node",
    "check_user",
    "edge_grants",
    "edge_user",
    "render_acl",
    "server_grants",
]

EDGE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""An edge id (the edge file's ``edge.id`` pattern): safe in topics, user and file names."""
_USER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$")
_SPARKPLUG_ID: Final = re.compile(r"^[^/+#\s]+$")

Access = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL line: ``access`` (``read`` = subscribe and receive) on ``topic`` (a filter)."""

    access: Access
    topic: str


def edge_user(edge_id: str) -> str:
    """The broker user name of an edge (the same as its default MQTT client id)."""
    return f"shopfloor-edge-{edge_id}"


def check_edge_id(edge_id: str) -> str:
    """Return ``edge_id`` if it is a valid edge id.

    Raises:
        ValueError: it is not (names the option).
    """
    if not EDGE_ID.match(edge_id):
        raise ValueError(
            f"edge: an edge id is 1-64 letters, digits, '_', '.', '-' starting with a "
            f"letter or digit, got {edge_id!r}"
        )
    return edge_id


def check_user(name: str) -> str:
    """Return ``name`` if it can be a broker user name in the password and ACL files.

    Raises:
        ValueError: it cannot (names the option).
    """
    if not _USER.match(name):
        raise ValueError(
            f"server-user: 1-128 letters, digits, '_', '.', '@', '-' starting with a "
            f"letter or digit, got {name!r}"
        )
    return name


def check_root(value: str, *, option: str) -> str:
    """Return ``value`` if it is usable as topic levels in an ACL line.

    Raises:
        ValueError: empty levels, wildcards, ``$`` at the start or white space (names ``option``).
    """
    levels = value.split("/")
    if (
        not value
        or value.startswith("$")
        or any(not level or set(level) & set("+#\x00") for level in levels)
        or any(c.isspace() for c in value)
    ):
        raise ValueError(
            f"{option}: topic levels without '+', '#', white space, a leading '$' or a '/' "
            f"at either end, got {value!r}"
        )
    return value


def edge_grants(root: str, edge_id: str) -> list[Grant]:
    """What edge ``edge_id`` may do: publish its own messages (and its writable tags and
    the results of commands), read its own answers and the commands addressed to it."""
    base = f"{root}/edges/{edge_id}"
    return [
        Grant("write", f"{base}/{TOPIC_BATCHES}"),
        Grant("write", f"{base}/{TOPIC_TAGS}"),
        Grant("write", f"{base}/{TOPIC_STATUS}"),
        Grant("write", f"{base}/{TOPIC_WRITABLES}"),
        Grant("write", f"{base}/{TOPIC_RESULTS}"),
        Grant("read", f"{base}/{TOPIC_ACKS}"),
        Grant("read", f"{root}/{COMMANDS}/{edge_id}/#"),
    ]


def server_grants(
    root: str, *, uns_root: str | None = None, sparkplug_node: tuple[str, str] | None = None
) -> list[Grant]:
    """What the platform's users may do.

    Args:
        root: ``[ingest.mqtt] topic_root``.
        uns_root: ``[uns] topic_root`` when the platform publishes the Unified Namespace on
            this broker (everything below it).
        sparkplug_node: ``(group_id, node_id)`` of ``[sparkplug_node]`` on this broker.
    """
    every = f"{root}/edges/+"
    grants = [
        Grant("read", f"{every}/{kind}") for kind in (TOPIC_BATCHES, TOPIC_TAGS, TOPIC_STATUS)
    ]
    # Mosquitto 2.0 checks reads on the topic of each delivered message, without the
    # $share prefix; brokers that check the subscription filter itself see these.
    grants += [Grant("read", f"$share/+/{every}/{kind}") for kind in (TOPIC_BATCHES, TOPIC_STATUS)]
    grants.append(Grant("write", f"{every}/{TOPIC_ACKS}"))
    # writes to equipment (docs/writes.md): only the platform commands, edges answer
    grants += [Grant("read", f"{every}/{kind}") for kind in (TOPIC_WRITABLES, TOPIC_RESULTS)]
    grants.append(Grant("write", f"{root}/{COMMANDS}/#"))
    # scaled out (docs/scale-out.md): workers publish live values, API servers read them
    grants += [Grant("write", f"{root}/live/+"), Grant("read", f"{root}/live/+")]
    if uns_root is not None:
        grants.append(Grant("write", f"{uns_root}/#"))
    if sparkplug_node is not None:
        group, node = sparkplug_node
        grants += [
            Grant("write", f"{NAMESPACE}/{group}/{kind}/{node}") for kind in ("NBIRTH", "NDEATH")
        ]
        grants += [
            Grant("write", f"{NAMESPACE}/{group}/{kind}/{node}/+")
            for kind in ("DBIRTH", "DDEATH", "DDATA")
        ]
        grants.append(Grant("read", f"{NAMESPACE}/{group}/NCMD/{node}"))
        grants.append(Grant("read", f"{NAMESPACE}/STATE/+"))
    return grants


def check_sparkplug_node(value: str) -> tuple[str, str]:
    """``GROUP/NODE`` as ``(group, node)``.

    Raises:
        ValueError: not two Sparkplug ids separated by one '/' (names the option).
    """
    parts = value.split("/")
    if len(parts) != 2 or not all(_SPARKPLUG_ID.match(p) for p in parts):
        raise ValueError(
            f"sparkplug-node: GROUP/NODE, two Sparkplug ids without '+', '#' or white space, "
            f"got {value!r}"
        )
    return parts[0], parts[1]


def render_acl(users: Mapping[str, Sequence[Grant]], *, header: Iterable[str] = ()) -> str:
    """The text of a Mosquitto ACL file granting each user exactly its grants."""
    lines = [f"# {line}" if line else "#" for line in header]
    for user, grants in users.items():
        lines += ["", f"user {user}"]
        lines += [f"topic {grant.access} {grant.topic}" for grant in grants]
    return "\n".join(lines) + "\n"
