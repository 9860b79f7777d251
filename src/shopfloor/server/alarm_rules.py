"""Every alarm rule in force, built the same way in every process.

A single server evaluates these rules itself; scaled out (``alarms.partitions``,
docs/scale-out.md) the ingest workers do, and each alarm's partition is decided by the
rule set: the API servers (whose historian routes points into the committed-points
feed) and every worker must build the *same* list from the same configuration and plant.
So both composition roots (:mod:`~shopfloor.server.app`, :mod:`~shopfloor.server.worker`)
call :func:`alarm_rules`, never assemble their own.

The rules: the plant's templates', ``[alarms]``', one per SPC chart with ``alarm = true``
(on its derived tag ``<tag>.spc.<chart>``) and one per machine the anomaly monitor
watches with ``[analytics.anomaly] alarm = true`` (on ``<equipment>/anomaly_score``).
The SPC and anomaly monitors run in the API servers and store those derived points
through the shared historian, so scaled out they reach the workers through the feed like
any other point.
"""

from __future__ import annotations

import logging

from shopfloor.config import ShopfloorConfig
from shopfloor.server.analytics.anomaly_monitor import (
    WatchedMachine,
    anomaly_alarm_rules,
    watched_machines,
)
from shopfloor.server.analytics.machines import machines_of
from shopfloor.server.analytics.spc_monitor import spc_alarm_rules
from shopfloor.server.assets import AssetModel
from shopfloor.server.rules.rule import AlarmRule, rules_from_config

__all__ = ["alarm_rules", "monitor_alarm_rules", "warn_unpartitioned_monitors", "watched"]

logger = logging.getLogger(__name__)


def watched(config: ShopfloorConfig, assets: AssetModel | None) -> list[WatchedMachine]:
    """The machines ``[analytics.anomaly]`` covers in ``assets`` (none when disabled)."""
    if assets is None or not config.analytics.anomaly.enabled:
        return []
    return watched_machines(
        [(m.id, m.path) for m in machines_of(assets)],
        [t.path for t in assets.tags],
        config.analytics.anomaly.tags,
    )


def monitor_alarm_rules(config: ShopfloorConfig, assets: AssetModel | None) -> list[AlarmRule]:
    """The alarm rules on the SPC and anomaly monitors' derived points."""
    return [
        *spc_alarm_rules(config.analytics.spc),
        *anomaly_alarm_rules(config.analytics.anomaly, watched(config, assets)),
    ]


def alarm_rules(config: ShopfloorConfig, assets: AssetModel | None) -> list[AlarmRule]:
    """Every alarm rule of ``config`` and the plant ``assets`` (module docstring)."""
    return [
        *(assets.alarm_rules if assets else ()),
        *rules_from_config(config.alarms),
        *monitor_alarm_rules(config, assets),
    ]


def warn_unpartitioned_monitors(config: ShopfloorConfig, assets: AssetModel | None) -> None:
    """Say so when the workers evaluate SPC or anomaly alarms on points that every API
    server stores (``analytics.partitions = 0``): right with one API server, an alarm
    raised once per server's points with several."""
    unpartitioned = config.alarms.partitions and not config.analytics.partitions
    if unpartitioned and monitor_alarm_rules(config, assets):
        logger.warning(
            "alarms.partitions > 0 with SPC or anomaly alarms, but analytics.partitions = 0: "
            "every API server stores its own SPC and anomaly points, so with more than one "
            "API server those alarms see each server's points; set analytics.partitions "
            "(docs/scale-out.md)"
        )
