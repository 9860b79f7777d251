"""``[[analytics.reports]]``: defaults, and errors naming the key at fault."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shopfloor.config import ShopfloorConfig

EMAIL = {
    "name": "leads",
    "kind": "email",
    "smtp_host": "mail.test",
    "sender": "a@plant.test",
    "recipients": ["b@plant.test"],
}


def config(report: dict[str, object]) -> ShopfloorConfig:
    return ShopfloorConfig.model_validate(
        {"notify": {"channels": [EMAIL]}, "analytics": {"reports": [report]}}
    )


def test_defaults_send_both_files_the_morning_after() -> None:
    entry = config({"kind": "day", "channels": ["leads"]}).analytics.reports[0]
    assert (entry.formats, entry.at, entry.weekday, entry.settle_s) == (
        ["xlsx", "pdf"],
        "06:30",
        "mon",
        900.0,
    )


def test_an_unknown_channel_is_named_with_its_entry() -> None:
    with pytest.raises(ValidationError, match=r"analytics.reports\[0\].channels.*'robots'"):
        config({"kind": "day", "channels": ["robots"]})


@pytest.mark.parametrize(
    ("key", "value"),
    [("at", "25:00"), ("at", "24:00"), ("settle", "2d"), ("kind", "month"), ("formats", ["doc"])],
)
def test_bad_values_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        config({"kind": "day", "channels": ["leads"], key: value})
    assert key in str(caught.value)
