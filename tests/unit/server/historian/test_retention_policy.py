"""The retention policy (which tag keeps what, up to which midnight) and the disk report's
grouping, checked against plain Python and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.config import load_config_text
from shopfloor.server.historian.disk_usage import TagUsage, group_key, group_usage, share_out
from shopfloor.server.historian.retention_policy import (
    DAY_NS,
    PathRule,
    RetentionPolicy,
    expired_units,
    policy_of,
)

PATHS = [
    "acme/plant-1/utilities/air/comp-1/pressure",
    "acme/plant-1/utilities/water/pump-2/flow",
    "acme/plant-1/quality/lab/gauge/diameter",
    "acme/plant-10/quality/lab/gauge/diameter",
    "acme/plant-1/machining/line-1/cell-1/press/temp",
    "solo",
]


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("acme/plant-1/utilities/**", {0, 1}),
        ("acme/plant-1/utilities", {0, 1}),
        ("acme/plant-1", {0, 1, 2, 4}),  # whole segments: not plant-10
        ("acme/*/quality/**", {2, 3}),
        ("acme/plant-1/*/lab/gauge/diameter", {2}),  # * stays within one level
        ("**/diameter", {2, 3}),
        ("acme/plant-1?/**", {3}),
        ("acme/plant-[0-9]/**", {0, 1, 2, 4}),
        ("acme/plant-[!1]*/**", set()),
        ("solo", {5}),
    ],
)
def test_patterns_match_globs_and_whole_segment_prefixes(pattern: str, matched: set[int]) -> None:
    rule = PathRule.of(pattern, DAY_NS)
    assert {i for i, p in enumerate(PATHS) if rule.matches(p)} == matched


def test_the_first_matching_rule_wins_and_unmatched_tags_get_the_default() -> None:
    policy = RetentionPolicy(
        raw_ns=90 * DAY_NS,
        rules=(
            PathRule.of("acme/plant-1/utilities/water", None),
            PathRule.of("acme/plant-1/utilities/**", 30 * DAY_NS),
            PathRule.of("acme/plant-1/utilities/air", 7 * DAY_NS),  # shadowed by the one above
        ),
    )
    assert [policy.raw_keep_ns(p) for p in PATHS] == [
        30 * DAY_NS,
        None,
        90 * DAY_NS,
        90 * DAY_NS,
        90 * DAY_NS,
        90 * DAY_NS,
    ]


def test_cutoffs_are_the_midnight_at_or_before_now_minus_the_retention() -> None:
    rng = np.random.default_rng(1)
    policy = RetentionPolicy(raw_ns=3 * DAY_NS, rules=(PathRule.of("acme/plant-1/quality", None),))
    ids = {p: i for i, p in enumerate(PATHS)}
    for now in rng.integers(-(10**17), 10**18, 200):  # before 1970 too
        cutoffs = policy.raw_cutoffs(ids, int(now))
        want = (int(now) - 3 * DAY_NS) // DAY_NS * DAY_NS  # Python floors, like numpy
        assert cutoffs == {i: want for p, i in ids.items() if p != PATHS[2]}


def test_expired_units_are_whole_days_before_their_tags_cutoff() -> None:
    cutoffs = {1: 10 * DAY_NS, 2: 12 * DAY_NS}
    units = [(d * DAY_NS, t) for d in range(14) for t in (1, 2, 3)]  # tag 3: kept forever
    got = expired_units(units, cutoffs)
    assert list(got) == [d * DAY_NS for d in range(12)]  # oldest first
    assert all(got[d * DAY_NS] == [1, 2] for d in range(10))
    assert all(got[d * DAY_NS] == [2] for d in (10, 11))


def test_policy_from_the_configuration() -> None:
    section = load_config_text(
        '[historian.retention]\nraw = "2w"\ndisk_budget = "1GiB"\n'
        '[[historian.retention.rules]]\nmatch = "a/**"\nraw = "12h"\n'
    ).historian.retention
    policy = policy_of(section)
    assert policy.raw_ns == 14 * DAY_NS
    assert policy.disk_budget_bytes == 2**30
    assert policy.raw_keep_ns("a/b") == DAY_NS // 2
    assert policy.active
    assert not RetentionPolicy().active


def test_group_keys_follow_the_asset_path() -> None:
    path = "acme/plant-1/machining/line-1/cell-1/press/temp"
    assert group_key(path, "tag") == path
    assert group_key(path, "equipment") == "acme/plant-1/machining/line-1/cell-1/press"
    assert group_key(path, "area") == "acme/plant-1/machining"
    assert group_key("plant/temp", "area") == "plant"
    assert group_key("solo", "equipment") == "(no asset)"


def test_groups_sum_their_tags_largest_first() -> None:
    rng = np.random.default_rng(2)
    tags = [
        TagUsage(p, int(n), int(b), int(lo), int(lo) + 5, int(r), int(r) * 3)
        for p, n, b, lo, r in zip(
            PATHS,
            rng.integers(1, 1000, len(PATHS)),
            rng.integers(1, 10**6, len(PATHS)),
            rng.integers(0, 10**9, len(PATHS)),
            rng.integers(0, 100, len(PATHS)),
            strict=True,
        )
    ]
    groups = group_usage(tags, "area")
    for g in groups:
        members = [t for t in tags if group_key(t.path, "area") == g.key]
        assert g.tags == len(members)
        assert g.points == sum(t.points for t in members)
        assert g.bytes == sum(t.bytes for t in members)
        assert g.oldest_ns == min(t.oldest_ns for t in members if t.oldest_ns is not None)
    sizes = [g.bytes + g.rollup_bytes for g in groups]
    assert sizes == sorted(sizes, reverse=True)
    under = group_usage(tags, "tag", prefix="acme/plant-1")
    assert sorted(g.key for g in under) == sorted(PATHS[i] for i in (0, 1, 2, 4))


@pytest.mark.parametrize("total", [0, 1, 7, 10**9 + 3])
def test_share_out_is_proportional_and_sums_exactly(total: int) -> None:
    weights = [5, 0, 3, 11, 1]
    shares = share_out(total, weights)
    assert sum(shares) == (total if total else 0)
    for share, w in zip(shares, weights, strict=True):
        assert abs(share - total * w / sum(weights)) < 1
