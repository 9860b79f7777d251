"""Edit the plant through the API: validated like the file, written back to the file.

An edit (create, replace, merge-patch or delete one equipment) is applied to the plant
file's text with tomlkit (:mod:`.toml_edit`: comments and layout kept), the new text is
validated exactly as a restart would read it (the plant file's model, then
:func:`~.model.build_asset_model` over the whole plant with its templates), and only
then written atomically (temporary file, fsync, rename, fsync of the folder) and applied
live through ``on_change`` (the composition root registers the new tags with the
historian and hands the new alarm rules to the engine). A refused edit changes nothing.
As a guard against a layout tomlkit cannot edit in place, the written text must parse to
exactly the old plant with the one change asked, or the edit is refused.

Edits are serialised by one lock. Each version of the file has a tag (:attr:`version`, a
hash of its text) that the API sends as its ETag; an edit based on another version is
refused (``If-Match``), and so is any edit while the file on disk differs from the one
loaded (changed by hand: restart to take that change first, or it would be overwritten).

Not editable, each refused with its reason: the packaged demo plant (it lives in the
installed package; export it and configure the copy), and a YAML plant file (PyYAML
cannot write a file back with its comments; export it as TOML to edit it here).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import ValidationError

from shopfloor.config.assets import EquipmentEntry, PlantFile
from shopfloor.config.load import validate_data
from shopfloor.errors import ConfigError, ShopfloorError
from shopfloor.server.assets.files import Format, file_format, parse_text, read_document, render
from shopfloor.server.assets.model import AssetModel, build_asset_model, template_files
from shopfloor.server.assets.toml_edit import add_row, remove_row, sync_row

__all__ = [
    "AssetEditError",
    "EditResult",
    "PlantEditor",
    "atomic_write",
    "export_files",
    "merge_patch",
]

logger = logging.getLogger(__name__)

OnChange = Callable[[AssetModel, AssetModel], Awaitable[None]]
Kind = Literal["invalid", "not_found", "conflict", "stale"]
_PROBLEM = re.compile(r"equipment\.(\d+)(?:\.([A-Za-z0-9_.\-]+))?(?: \(line \d+\))?: (.*)$")


class AssetEditError(ShopfloorError):
    """An edit of the asset model was refused; nothing changed.

    Attributes:
        kind: ``invalid`` (the edited plant would not load), ``not_found`` (no such
            equipment), ``conflict`` (the plant cannot be edited, or changed on disk) or
            ``stale`` (the edit was based on another version).
        field: the equipment's field at fault (``area``, ``attributes``), if one is.
        message: a sentence for people.
    """

    def __init__(self, kind: Kind, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class EditResult:
    """What an accepted edit did: the equipment's row before and after (None: created or
    deleted), its ISA-95 path, and the plant's new version."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None
    path: str
    version: str


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: keys of ``patch`` replace, ``null`` removes, objects merge."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


class PlantEditor:
    """The plant being served, and the one way to change it.

    Args:
        plant_path: the plant file.
        templates_dir: its templates (not edited here).
        model: the model loaded from them at start.
        read_only: why the plant cannot be edited (None: it can).
        on_change: awaited with (new, old) model after each accepted edit.
    """

    def __init__(
        self,
        plant_path: Path,
        templates_dir: Path,
        model: AssetModel,
        *,
        read_only: str | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.plant_path = plant_path
        self.templates_dir = templates_dir
        self._model = model
        self._text = plant_path.read_text(encoding="utf-8")
        if read_only is None and file_format(plant_path) == "yaml":
            read_only = (
                f"{plant_path.name} is YAML, which cannot be written back with its comments: "
                "export the plant as TOML (GET /api/v1/assets/export) and configure that "
                "file to edit it through the API"
            )
        self.read_only = read_only
        self.on_change = on_change
        self._lock = asyncio.Lock()

    @property
    def model(self) -> AssetModel:
        """The model now served."""
        return self._model

    @property
    def version(self) -> str:
        """A tag of the plant file's current text (the API's ETag)."""
        return hashlib.sha256(self._text.encode()).hexdigest()[:16]

    def rows(self) -> list[dict[str, Any]]:
        """The equipment rows as written in the plant file."""
        rows: list[dict[str, Any]] = tomllib.loads(self._text).get("equipment", [])
        return rows

    def row(self, equipment_id: str) -> dict[str, Any]:
        """One equipment's row as written.

        Raises:
            AssetEditError: no equipment has that id (``not_found``).
        """
        rows = self.rows()
        return rows[self._index(rows, equipment_id)]

    def path_of(self, equipment_id: str) -> str:
        """The ISA-95 path of an equipment in the model now served ('' if none)."""
        return next((e.path for e in self._model.equipment if e.id == equipment_id), "")

    # ------------------------------------------------------------------ edits
    async def create(self, fields: dict[str, Any], *, if_match: str | None = None) -> EditResult:
        """Add an equipment (its id must be new)."""

        def change(rows: list[dict[str, Any]], doc: Any) -> tuple[int, Any, Any]:
            entry = _entry(fields)
            if any(r.get("id") == entry["id"] for r in rows):
                raise AssetEditError(
                    "invalid", f"equipment {entry['id']!r} exists already", field="id"
                )
            add_row(doc, "equipment", entry)
            return len(rows), None, entry

        return await self._edit(change, if_match)

    async def replace(
        self, equipment_id: str, fields: dict[str, Any], *, if_match: str | None = None
    ) -> EditResult:
        """Replace an equipment's row whole (keys left out go back to their defaults)."""

        def change(rows: list[dict[str, Any]], doc: Any) -> tuple[int, Any, Any]:
            i = self._index(rows, equipment_id)
            entry = _entry({"id": equipment_id, **fields})
            if entry["id"] != equipment_id and any(r.get("id") == entry["id"] for r in rows):
                raise AssetEditError(
                    "invalid", f"equipment {entry['id']!r} exists already", field="id"
                )
            sync_row(doc["equipment"][i], entry)
            return i, rows[i], entry

        return await self._edit(change, if_match)

    async def patch(
        self, equipment_id: str, patch: dict[str, Any], *, if_match: str | None = None
    ) -> EditResult:
        """Change some of an equipment's keys (a JSON merge patch: ``null`` removes)."""

        def change(rows: list[dict[str, Any]], doc: Any) -> tuple[int, Any, Any]:
            i = self._index(rows, equipment_id)
            entry = _entry(merge_patch(rows[i], patch))
            if entry["id"] != equipment_id and any(r.get("id") == entry["id"] for r in rows):
                raise AssetEditError(
                    "invalid", f"equipment {entry['id']!r} exists already", field="id"
                )
            sync_row(doc["equipment"][i], entry)
            return i, rows[i], entry

        return await self._edit(change, if_match)

    async def delete(self, equipment_id: str, *, if_match: str | None = None) -> EditResult:
        """Remove an equipment (its history stays in the historian, its alarms stop)."""

        def change(rows: list[dict[str, Any]], doc: Any) -> tuple[int, Any, Any]:
            i = self._index(rows, equipment_id)
            if len(rows) == 1:
                raise AssetEditError(
                    "invalid", "a plant has at least one equipment: this is the last"
                )
            remove_row(doc, "equipment", i)
            return i, rows[i], None

        return await self._edit(change, if_match)

    async def _edit(
        self,
        change: Callable[[list[dict[str, Any]], Any], tuple[int, Any, Any]],
        if_match: str | None,
    ) -> EditResult:
        async with self._lock:
            if self.read_only is not None:
                raise AssetEditError("conflict", self.read_only)
            if if_match is not None and not _matches(if_match, self.version):
                raise AssetEditError(
                    "stale",
                    f"the plant is at version {self.version}, not {if_match.strip()}: "
                    "read it again and redo the edit",
                )
            old_path_of = {e.id: e.path for e in self._model.equipment}
            text, model, before, after = await asyncio.to_thread(self._prepare, change)
            await asyncio.to_thread(atomic_write, self.plant_path, text)
            old, self._model, self._text = self._model, model, text
            if self.on_change is not None:
                await self.on_change(model, old)
            key = (after or before or {}).get("id", "")
            path = next((e.path for e in model.equipment if e.id == key), old_path_of.get(key, ""))
            return EditResult(before, after, path, self.version)

    def _prepare(
        self, change: Callable[[list[dict[str, Any]], Any], tuple[int, Any, Any]]
    ) -> tuple[str, AssetModel, dict[str, Any] | None, dict[str, Any] | None]:
        """On a thread: the edited text and its model, or AssetEditError."""
        try:
            on_disk = self.plant_path.read_text(encoding="utf-8")
        except OSError as err:
            raise AssetEditError("conflict", f"{self.plant_path}: {err.strerror}") from err
        if on_disk != self._text:
            raise AssetEditError(
                "conflict",
                f"{self.plant_path.name} changed on disk since the server loaded it: restart "
                "the server to take that change first (an edit now would overwrite it)",
            )
        doc = tomlkit.parse(self._text)
        rows = self.rows()
        index, before, after = change(rows, doc)
        text = doc.as_string()
        name = self.plant_path.name
        expected = tomllib.loads(self._text)
        expected["equipment"] = (
            [*rows[:index], *([] if after is None else [after]), *rows[index + 1 :]]
            if before is not None
            else [*rows, after]
        )
        if tomllib.loads(text) != expected:  # the file must say exactly what was asked
            logger.error("editing %s in place would change more than asked: refused", name)
            raise AssetEditError(
                "conflict",
                f"{name} is laid out in a way this edit cannot be written into without "
                "changing other keys: make the change by hand and restart",
            )
        try:
            plant = validate_data(tomllib.loads(text), PlantFile, source=name, text=text)
            model = build_asset_model(plant, self._model.templates, source=name, text=text)
        except (ConfigError, tomllib.TOMLDecodeError) as err:
            problems = getattr(err, "problems", [str(err)])
            raise _refusal(problems, index) from err
        return text, model, before, after

    @staticmethod
    def _index(rows: list[dict[str, Any]], equipment_id: str) -> int:
        for i, row in enumerate(rows):
            if row.get("id") == equipment_id:
                return i
        raise AssetEditError("not_found", f"no equipment has the id {equipment_id!r}")

    # ------------------------------------------------------------------ export
    def export(self, fmt: Format = "toml") -> dict[str, str]:
        """The plant file and its templates as ``fmt``, by file name (``plant.toml``,
        ``templates/cnc-mill.toml``): a file already in ``fmt`` is given as written,
        comments and all; another is converted from its data.

        Raises:
            ConfigError: a template file cannot be read.
        """
        return export_files(self.plant_path, self.templates_dir, fmt, plant_text=self._text)


def export_files(
    plant_path: Path, templates_dir: Path, fmt: Format, *, plant_text: str | None = None
) -> dict[str, str]:
    """The plant file and its templates as ``fmt`` by relative file name (see
    :meth:`PlantEditor.export`).

    Raises:
        ConfigError: a file cannot be read or parsed.
    """
    out: dict[str, str] = {}
    suffix = f".{fmt}"
    for path, name in [
        (plant_path, f"plant{suffix}"),
        *((p, f"templates/{p.stem}{suffix}") for p in template_files(templates_dir)),
    ]:
        if path == plant_path and plant_text is not None:
            document = parse_text(plant_text, fmt=file_format(path), source=str(path))
        else:
            document = read_document(path)
        if name in out:
            raise ConfigError(f"{path}: two templates are named {path.stem}")
        out[name] = document.text if document.format == fmt else render(document.data, fmt)
    return out


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a crash leaves the old file or the new, whole.

    Raises:
        OSError: the folder is not writable or the disk is full (the file is unchanged).
    """
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def _entry(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` checked as one equipment, as it is written (only keys given, no nulls).

    Raises:
        AssetEditError: a field is invalid (``invalid``, naming it).
    """
    clean = {k: v for k, v in fields.items() if v is not None}
    try:
        entry = EquipmentEntry.model_validate(clean)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        more = len(err.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise AssetEditError(
            "invalid", f"{field}: {message}" if field else message, field=field
        ) from err
    dumped = entry.model_dump(mode="json", include=set(clean))
    return {k: dumped[k] for k in EquipmentEntry.model_fields if k in dumped}


def _refusal(problems: list[str], index: int) -> AssetEditError:
    """The first problem, naming the edited equipment's field when it is at fault."""
    for problem in problems:
        found = _PROBLEM.search(problem.strip())
        if found and int(found.group(1)) == index:
            field = found.group(2)
            message = found.group(3)
            return AssetEditError(
                "invalid", f"{field}: {message}" if field else message, field=field
            )
    first = problems[0].strip() if problems else "the edited plant is invalid"
    return AssetEditError("invalid", first)


def _matches(if_match: str, version: str) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
    return "*" in tags or version in tags
