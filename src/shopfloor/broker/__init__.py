"""The broker side of the MQTT transport: credentials, password file and ACL.

``shopfloor broker config`` (:func:`write_broker_files`) makes the files a Mosquitto
broker needs so that only known identities connect, each edge may publish only its own
topics and only the platform publishes the answers (docs/broker.md). It knows neither
the edge nor the server code: only the topic layout in :mod:`shopfloor.config.mqtt_link`.
"""

from __future__ import annotations

from .acl import Grant, edge_grants, edge_user, render_acl, server_grants
from .bundle import BrokerFiles, BrokerPlan, write_broker_files
from .passwords import hash_password, new_password, password_line, verify_password

__all__ = [
    "BrokerFiles",
    "BrokerPlan",
    "Grant",
    "edge_grants",
    "edge_user",
    "hash_password",
    "new_password",
    "password_line",
    "render_acl",
    "server_grants",
    "verify_password",
    "write_broker_files",
]
