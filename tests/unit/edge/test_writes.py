"""Checking a value against a tag before it is written, and reading it back in engineering
units: the checks that keep a refused value from ever reaching a device."""

from __future__ import annotations

from typing import Any

import pytest

from shopfloor.config.connectors.modbus import ModbusTagConfig
from shopfloor.edge.writes import check_value, engineering
from shopfloor.errors import PayloadError
from shopfloor.model.control import WriteValue


def tag(**fields: Any) -> ModbusTagConfig:
    base = {"name": "t", "address": "hr:0", "writable": True}
    return ModbusTagConfig.model_validate({**base, **fields})


SCALED = {"data_type": "int16", "scale": 0.1, "offset": -50.0}


@pytest.mark.parametrize(
    ("fields", "value", "expected"),
    [
        (SCALED, 21.5, 21.5),
        (SCALED, -50, -50),
        ({"data_type": "uint16", "states": {"0": "AUTO", "1": "MANUAL"}}, "MANUAL", "MANUAL"),
        ({"data_type": "uint16", "states": {"0": "AUTO", "1": "MANUAL"}}, 0, "AUTO"),
        ({"address": "co:1"}, True, True),
        ({"address": "co:1"}, 0, False),
        ({"data_type": "string", "length": 4}, "abcd", "abcd"),
        ({"data_type": "float32"}, 1e30, 1e30),
        ({"data_type": "uint32", "scale": 2.0}, 8589934590, 8589934590),  # raw 2^32 - 1
    ],
)
def test_accepted_values_come_back_as_the_tag_takes_them(
    fields: dict[str, Any], value: WriteValue, expected: WriteValue
) -> None:
    assert check_value(tag(**fields), value) == expected


@pytest.mark.parametrize(
    ("fields", "value", "why"),
    [
        (SCALED, 21.55, "resolution 0.1 from -50"),  # raw 715.5 would round silently
        (SCALED, 3226.8, "outside what tag t can hold"),  # raw 32768 > int16
        ({**SCALED, "eng_low": 0.0}, -0.5, "below the range"),
        ({**SCALED, "eng_high": 100.0}, 100.1, "above the range"),
        (SCALED, float("inf"), "finite"),
        (SCALED, "21.5", "takes a number"),
        (SCALED, True, "takes a number"),
        ({"data_type": "uint16"}, -1, "outside"),
        ({"data_type": "float32"}, 1e39, "float32"),
        ({"data_type": "uint16", "states": {"0": "AUTO"}}, "JOG", "no state 'JOG'"),
        ({"data_type": "uint16", "states": {"0": "AUTO"}}, 3, "no state numbered 3"),
        ({"data_type": "uint16", "states": {"0": "AUTO"}}, 0.0, "state labels"),
        ({"address": "co:1"}, 2, "flag"),
        ({"address": "co:1"}, "on", "flag"),
        ({"data_type": "string", "length": 4}, "abcde", "5 bytes"),
        ({"data_type": "string", "length": 4}, 5, "text"),
        ({"scale": 0.0}, 1.0, "scale 0"),
    ],
)
def test_refused_values_name_the_value_field_and_why(
    fields: dict[str, Any], value: WriteValue, why: str
) -> None:
    with pytest.raises(PayloadError, match=why) as caught:
        check_value(tag(**fields), value)
    assert caught.value.field == "value"


def test_values_read_back_are_in_engineering_units() -> None:
    assert engineering(tag(**SCALED), 715.0, None) == 21.5  # not 21.500000000000004
    assert engineering(tag(data_type="float32"), 21.299999237060547, None) == 21.3
    assert engineering(tag(data_type="uint16", states={"1": "MANUAL"}), 1.0, None) == "MANUAL"
    assert engineering(tag(data_type="uint16", states={"1": "MANUAL"}), 2.0, None) == 2
    assert engineering(tag(data_type="int32"), -70000.0, None) == -70000
    assert engineering(tag(address="co:1"), 1.0, None) is True
    assert engineering(tag(data_type="string", length=4), float("nan"), "ab") == "ab"
    assert engineering(tag(), float("nan"), None) is None
