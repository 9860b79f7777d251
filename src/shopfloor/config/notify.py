"""Where alarm notifications go (``[[notify.channels]]``) and which go where
(``[[notify.routes]]``).

Example::

    [[notify.channels]]
    name = "maintenance"
    kind = "dingtalk"                 # webhook, dingtalk, wecom, feishu, email
    url_env = "DINGTALK_WEBHOOK"      # the robot's URL holds its token: keep it out of files
    secret_env = "DINGTALK_SECRET"    # signing secret ("SEC..."), if the robot signs

    [[notify.channels]]
    name = "shift-leads"
    kind = "email"
    smtp_host = "mail.plant.local"
    smtp_port = 587
    tls = "starttls"                  # starttls, ssl, none
    username = "shopfloor"
    password_env = "SMTP_PASSWORD"
    sender = "shopfloor@plant.local"
    recipients = ["lead@plant.local"]

    [[notify.routes]]
    channel = "maintenance"
    priorities = ["critical", "high"]
    prefixes = ["acme/plant-1/machining"]
    escalate_after = "15m"            # still unacknowledged: tell the next channel too
    escalate_to = "shift-leads"
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopfloor.config.alarms import Priority, repeated
from shopfloor.config.durations import parse_duration_s
from shopfloor.config.secrets import read_secret

__all__ = ["ChannelConfig", "NotifySection", "RouteConfig"]

ChannelKind = Literal["webhook", "dingtalk", "wecom", "feishu", "email"]
EventName = Literal["activated", "cleared", "acknowledged", "shelved", "returned_to_service"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Section):
    """One place notifications are sent."""

    name: str = Field(min_length=1, description="The channel's name, used by routes.")
    kind: ChannelKind = Field(description="webhook, dingtalk, wecom, feishu or email.")
    url: str | None = Field(
        None, description="HTTP kinds: the URL to POST to (or `url_env`, when it holds a token)."
    )
    url_env: str | None = Field(None, description="Environment variable holding the URL.")
    secret_env: str | None = Field(
        None, description="DingTalk and Feishu: environment variable holding the signing secret."
    )
    smtp_host: str | None = Field(None, description="email: the SMTP server.")
    smtp_port: int = Field(587, ge=1, le=65535, description="email: its port.")
    tls: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="email: STARTTLS, implicit TLS (`ssl`, port 465) or none."
    )
    ca_file: Path | None = Field(
        None, description="email: PEM CA to verify the server (default: the system's)."
    )
    username: str | None = Field(None, description="email: login, if the server wants one.")
    password_env: str | None = Field(None, description="email: variable holding the password.")
    sender: str | None = Field(None, description="email: the From address.")
    recipients: list[str] = Field(default_factory=list, description="email: the To addresses.")
    rate_per_minute: int = Field(
        20, ge=1, le=6000, description="Most messages a minute (DingTalk robots allow 20)."
    )
    attempts: int = Field(5, ge=1, le=20, description="Tries per message before giving up.")

    @model_validator(mode="after")
    def _complete(self) -> ChannelConfig:
        if self.kind == "email":
            if not (self.smtp_host and self.sender and self.recipients):
                raise ValueError("an email channel needs smtp_host, sender and recipients")
        elif (self.url is None) == (self.url_env is None):
            raise ValueError(f"a {self.kind} channel needs url or url_env (one of them)")
        return self

    def resolved_url(self) -> str:
        """The URL, read from ``url_env`` if given.

        Raises:
            ConfigError: the variable is unset.
        """
        if self.url is not None:
            return self.url
        return _env(self.url_env or "", f"notify channel {self.name}")

    def secret(self) -> str | None:
        """The signing secret, if any (ConfigError when its variable is unset)."""
        return None if self.secret_env is None else _env(self.secret_env, f"channel {self.name}")

    def password(self) -> str | None:
        """The SMTP password, if any (ConfigError when its variable is unset)."""
        if self.password_env is None:
            return None
        return _env(self.password_env, f"channel {self.name}")


def _env(name: str, what: str) -> str:
    return read_secret(env=name, file=None, what=what) or ""


class RouteConfig(_Section):
    """Which alarm transitions go to a channel."""

    channel: str = Field(description="The channel's name.")
    priorities: list[Priority] = Field(
        default_factory=lambda: list[Priority](["critical", "high", "medium", "low"]),
        description="Only alarms of these priorities (default: all).",
    )
    prefixes: list[str] = Field(
        default_factory=list,
        description="Only alarms whose tag path starts with one of these asset paths "
        "(whole segments; default: everywhere), e.g. an area.",
    )
    events: list[EventName] = Field(
        default_factory=lambda: list[EventName](["activated"]),
        description="Which transitions (default: an alarm coming in).",
    )
    escalate_after: str | None = Field(
        None, description="If the alarm is still unacknowledged this long after it came in…"
    )
    escalate_to: str | None = Field(None, description="…tell this channel too.")

    @field_validator("escalate_after")
    @classmethod
    def _delay(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= parse_duration_s(value) <= 7 * 86400:
            raise ValueError(f"escalate_after between 1s and 7d, got {value!r}")
        return value

    @model_validator(mode="after")
    def _escalation_pair(self) -> RouteConfig:
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError("escalate_after and escalate_to go together")
        return self

    @property
    def escalate_after_s(self) -> float | None:
        """``escalate_after`` in seconds."""
        return None if self.escalate_after is None else parse_duration_s(self.escalate_after)


class NotifySection(_Section):
    """Alarm notifications."""

    channels: list[ChannelConfig] = Field(
        default_factory=list, description="`[[notify.channels]]`: where messages can go."
    )
    routes: list[RouteConfig] = Field(
        default_factory=list, description="`[[notify.routes]]`: which alarms go where."
    )

    def relative_to(self, base: Path) -> NotifySection:
        """A copy whose channels' ``ca_file`` is made absolute against ``base``."""
        channels = [
            c.model_copy(update={"ca_file": base / c.ca_file})
            if c.ca_file is not None and not c.ca_file.is_absolute()
            else c
            for c in self.channels
        ]
        return self.model_copy(update={"channels": channels})

    @model_validator(mode="after")
    def _names(self) -> NotifySection:
        names = [c.name for c in self.channels]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"channels named twice: {', '.join(dupes)}")
        for i, route in enumerate(self.routes):
            for target in (route.channel, route.escalate_to):
                if target is not None and target not in names:
                    raise ValueError(f"routes[{i}] names no channel {target!r}")
        return self
