"""Write the broker's files: one credential per identity, the password file, the ACL and
a ``mosquitto.conf`` snippet (``shopfloor broker config``).

Layout of the output folder::

    shopfloor.conf            allow_anonymous false, password_file, acl_file (for conf.d/)
    passwords                 Mosquitto password file ($7$ hashes), mode 0600
    acl                       Mosquitto ACL file
    credentials/<user>.password   the password in clear, mode 0600, for that edge/server

A credential is written once and kept: running the command again (say, with one more
edge) reuses every existing password, so no running edge is locked out; the password
and ACL files are made anew from the identities named in this run, so an identity left
out is no longer admitted (its credential file stays, unused). ``rotate`` makes new
passwords for the named users. Passwords are never logged or printed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shopfloor.errors import ConfigError

from .acl import (
    Grant,
    check_edge_id,
    check_root,
    check_sparkplug_node,
    check_user,
    edge_grants,
    edge_user,
    render_acl,
    server_grants,
)
from .passwords import new_password, password_line

__all__ = ["BrokerFiles", "BrokerPlan", "write_broker_files"]

CONF_NAME = "shopfloor.conf"
PASSWORDS_NAME = "passwords"
ACL_NAME = "acl"
CREDENTIALS_DIR = "credentials"


@dataclass(frozen=True, slots=True)
class BrokerPlan:
    """Who the broker admits and what they may do.

    Attributes:
        edges: edge ids (``edge.id`` of each edge file); user ``shopfloor-edge-<id>``.
        server_users: the platform's user names (``[ingest.mqtt] username``).
        topic_root: ``topic_root`` of the MQTT transport (edges and platform).
        uns_root: ``[uns] topic_root`` if the platform publishes the UNS on this broker.
        sparkplug_node: ``GROUP/NODE`` if the platform is a Sparkplug node on this broker.
        rotate: user names whose passwords are replaced.
    """

    edges: Sequence[str]
    server_users: Sequence[str] = ("shopfloor-platform",)
    topic_root: str = "shopfloor/v1"
    uns_root: str | None = None
    sparkplug_node: str | None = None
    rotate: Sequence[str] = ()

    def users(self) -> dict[str, list[Grant]]:
        """User name → grants, in a stable order (platform first, then edges).

        Raises:
            ValueError: a bad edge id, user name or topic root, a name given twice, or a
                rotated user that is not in the plan (each names its option).
        """
        root = check_root(self.topic_root, option="topic-root")
        uns = None if self.uns_root is None else check_root(self.uns_root, option="uns-root")
        node = None if self.sparkplug_node is None else check_sparkplug_node(self.sparkplug_node)
        if not self.server_users:
            raise ValueError("server-user: at least one platform user is needed")
        if not self.edges:
            raise ValueError("edge: name at least one edge")
        users: dict[str, list[Grant]] = {}
        for name in self.server_users:
            _add(users, check_user(name), server_grants(root, uns_root=uns, sparkplug_node=node))
        for edge in self.edges:
            _add(users, edge_user(check_edge_id(edge)), edge_grants(root, edge))
        unknown = sorted(set(self.rotate) - set(users))
        if unknown:
            raise ValueError(f"rotate: not a user of this configuration: {', '.join(unknown)}")
        return users


def _add(users: dict[str, list[Grant]], name: str, grants: list[Grant]) -> None:
    if name in users:
        raise ValueError(f"user {name!r} is named twice (edge or server-user)")
    users[name] = grants


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What :func:`write_broker_files` wrote.

    Attributes:
        conf: the ``mosquitto.conf`` snippet.
        passwords: the password file.
        acl: the ACL file.
        credentials: user name → its credential file.
        created: users whose credential was made in this run (new or rotated).
        kept: users whose existing credential was reused.
    """

    conf: Path
    passwords: Path
    acl: Path
    credentials: dict[str, Path]
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def write_broker_files(
    out: Path, plan: BrokerPlan, *, broker_dir: Path | None = None
) -> BrokerFiles:
    """Write (or update) the broker's files for ``plan`` into ``out``.

    Args:
        out: the output folder (created; ``credentials/`` in it with mode 0700).
        plan: identities and topics.
        broker_dir: where the broker will find ``passwords`` and ``acl`` (the paths in the
            snippet); default: ``out`` itself, absolute.

    Raises:
        ValueError: the plan is invalid (names the option).
        ConfigError: a file cannot be read or written.
    """
    users = plan.users()
    where = (broker_dir or out).absolute()
    creds_dir = out / CREDENTIALS_DIR
    try:
        creds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        created: list[str] = []
        kept: list[str] = []
        passwords: dict[str, str] = {}
        paths: dict[str, Path] = {}
        for user in users:
            path = creds_dir / f"{user}.password"
            paths[user] = path
            existing = None if user in plan.rotate else _read_credential(path)
            if existing is None:
                existing = new_password()
                _write_atomic(path, existing + "\n")
                created.append(user)
            else:
                kept.append(user)
            passwords[user] = existing
        pw_path = out / PASSWORDS_NAME
        _write_atomic(pw_path, "".join(password_line(u, p) + "\n" for u, p in passwords.items()))
        acl_path = out / ACL_NAME
        _write_atomic(acl_path, render_acl(users, header=_acl_header(plan)), mode=0o644)
        conf_path = out / CONF_NAME
        _write_atomic(conf_path, _conf(where), mode=0o644)
    except OSError as err:
        raise ConfigError(
            f"broker config: cannot write {err.filename or out}: {err.strerror or err}"
        ) from err
    return BrokerFiles(conf_path, pw_path, acl_path, paths, created, kept)


def _read_credential(path: Path) -> str | None:
    """The password kept in ``path``, None if there is none yet.

    Raises:
        ConfigError: the file exists but is empty or unreadable (not silently replaced:
            an edge may be using it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"broker config: cannot read {path}: {err.strerror}") from err
    # the first line as the edge and platform read it (password_file), not stripped
    password = text.splitlines()[0] if text else ""
    if not password.strip():
        raise ConfigError(
            f"broker config: {path} is empty; delete it or use --rotate for a new password"
        )
    return password


def _write_atomic(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``text``; the file has ``mode`` from its creation
    on, so a secret is never readable by others, not even for a moment."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _acl_header(plan: BrokerPlan) -> Iterable[str]:
    yield "Made by `shopfloor broker config`; run it again rather than editing this file."
    yield f"MQTT transport topics under {plan.topic_root}/edges/<edge>/ (docs/broker.md)."
    yield "Each edge publishes only its own batches/tags/status and reads only its own acks;"
    yield "only the platform's users read every edge and publish the acks."


def _conf(where: Path) -> str:
    return (
        "# shopfloor: MQTT transport access (made by `shopfloor broker config`).\n"
        "# Copy into /etc/mosquitto/conf.d/ or paste into mosquitto.conf.\n"
        "# The broker's user (mosquitto) must be able to read both files.\n"
        "allow_anonymous false\n"
        f"password_file {where / PASSWORDS_NAME}\n"
        f"acl_file {where / ACL_NAME}\n"
    )
