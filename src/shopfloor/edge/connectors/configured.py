"""A connector's configured tags, indexed the ways every polling connector needs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shopfloor.config.connectors.base import ConnectorConfigBase, TagConfig
from shopfloor.config.durations import parse_duration_s
from shopfloor.edge.connectors.base import PollGroup
from shopfloor.edge.mapping import TagSpec, tag_meta, tag_spec
from shopfloor.errors import ConfigError
from shopfloor.model import TagMeta

T = TypeVar("T", bound=TagConfig)


@dataclass(frozen=True, slots=True)
class ConfiguredTags(Generic[T]):
    """Tags by path, poll groups by period, and the metadata and sampler specs of all.

    Attributes:
        by_path: each tag by its full ISA-95 path.
        groups: one poll group per distinct period (a tag's own ``period`` or the
            connector's), in the order the periods first appear.
        group_tags: the tags of each group, by group name.
        metas: what the platform is told about each tag.
        specs: what the sampler needs of each tag.
        allow_writes: the section's ``allow_writes``.
    """

    by_path: dict[str, T]
    groups: list[PollGroup]
    group_tags: dict[str, list[T]]
    metas: list[TagMeta]
    specs: list[TagSpec]
    allow_writes: bool = False

    @classmethod
    def build(cls, config: ConnectorConfigBase, tags: Sequence[T]) -> ConfiguredTags[T]:
        """Index ``tags`` of ``config``.

        Raises:
            ConfigError: two tags resolve to the same path.
        """
        by_path = {t.full_path(config.asset): t for t in tags}
        if len(by_path) != len(tags):
            raise ConfigError(f"connector {config.name}: two tags have the same path")
        by_period: dict[str, list[T]] = {}
        for tag in tags:
            by_period.setdefault(tag.period or config.period, []).append(tag)
        groups = [
            PollGroup(
                name=period,
                period_s=parse_duration_s(period),
                paths=tuple(t.full_path(config.asset) for t in members),
            )
            for period, members in by_period.items()
        ]
        return cls(
            by_path=by_path,
            groups=groups,
            group_tags=by_period,
            metas=[tag_meta(t, asset=config.asset) for t in tags],
            specs=[tag_spec(t, config) for t in tags],
            allow_writes=config.allow_writes,
        )


class ConfiguredDescription:
    """Mixin for polling connectors: ``tags``, ``specs`` and ``groups`` from their config.

    The connector sets ``self._configured = ConfiguredTags.build(config, config.tags)``.
    """

    _configured: ConfiguredTags[Any]

    @property
    def allows_writes(self) -> bool:
        """Whether the section says ``allow_writes = true`` (the file's lock on writes)."""
        return self._configured.allow_writes

    def tags(self) -> Sequence[TagMeta]:
        """Every configured tag."""
        return self._configured.metas

    def specs(self) -> Sequence[TagSpec]:
        """Scaling and deadbands for the sampler."""
        return self._configured.specs

    def groups(self) -> Sequence[PollGroup]:
        """One poll group per distinct period."""
        return list(self._configured.groups)

    def tag_config(self, path: str) -> TagConfig | None:
        """The configuration of the tag at ``path``, or None when there is none."""
        found: TagConfig | None = self._configured.by_path.get(path)
        return found
