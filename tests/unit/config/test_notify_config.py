"""``[[notify.channels]]`` and ``[[notify.routes]]``: complete channels, known names."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopfloor.config import load_config_text
from shopfloor.errors import ConfigError

DING = '[[notify.channels]]\nname = "ding"\nkind = "dingtalk"\nurl_env = "DING_URL"\n'


def _problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="plant.toml")
    (problem,) = info.value.problems
    return problem


def test_a_route_with_escalation(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (
        DING
        + '[[notify.channels]]\nname = "mail"\nkind = "email"\nsmtp_host = "mx"\n'
        + 'sender = "a@b"\nrecipients = ["c@d"]\nca_file = "ca.pem"\n'
        + '[[notify.routes]]\nchannel = "ding"\nescalate_after = "15m"\nescalate_to = "mail"\n'
    )
    config = load_config_text(text).resolve_paths(Path("/etc/shopfloor"))
    (route,) = config.notify.routes
    assert (route.escalate_after_s, route.events, route.priorities[0]) == (
        900,
        ["activated"],
        "critical",
    )
    assert config.notify.channels[1].ca_file == Path("/etc/shopfloor/ca.pem")
    monkeypatch.setenv("DING_URL", "https://oapi.dingtalk.com/robot/send?access_token=x")
    assert config.notify.channels[0].resolved_url().endswith("access_token=x")
    monkeypatch.delenv("DING_URL")
    with pytest.raises(ConfigError, match="DING_URL is not set"):
        config.notify.channels[0].resolved_url()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[notify.channels]]\nname = "d"\nkind = "dingtalk"\n', "needs url or url_env"),
        ('[[notify.channels]]\nname = "m"\nkind = "email"\nsmtp_host = "mx"\n', "needs smtp_host"),
        (DING + '[[notify.routes]]\nchannel = "dingg"\n', "routes[0] names no channel 'dingg'"),
        (DING + '[[notify.routes]]\nchannel = "ding"\nescalate_after = "5m"\n', "go together"),
        (DING + DING, "channels named twice: ding"),
        (DING + "rate_per_minute = 0\n", "notify.channels.0.rate_per_minute (line 5)"),
    ],
)
def test_bad_notification_settings_are_named(text: str, words: str) -> None:
    assert words in _problem(text)
