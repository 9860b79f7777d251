"""Edit a reviewed plant file in place, touching only what changed.

A plant file is reviewed like code: its comments explain why a machine is where it is.
An edit through the API must leave every other line as it was, so the file is changed
through tomlkit's document (which keeps comments, blank lines, key order, dotted keys and
inline-table style) key by key: unchanged values are not rewritten at all, a changed one
is replaced where it stands, a new key goes after the row's last key (before the comments
that introduce the next ``[[equipment]]``), a removed key goes alone.

tomlkit keeps the comment lines before an ``[[equipment]]`` header at the end of the row
above it; :func:`remove_row` hands them to the row above the removed one, so deleting a
machine never deletes the comment that introduces the next.
"""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import AoT, Comment, Item, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from shopfloor.server.assets.files import toml_table

__all__ = ["add_row", "remove_row", "sync_row"]


def add_row(doc: TOMLDocument, key: str, row: dict[str, Any]) -> None:
    """Append ``row`` to the array of tables ``key``, after a blank line."""
    rows = doc[key]
    if not isinstance(rows, AoT):
        raise TypeError(f"{key} is not an array of tables")
    if len(rows):
        last = rows[len(rows) - 1]
        if not last.as_string().endswith("\n\n"):
            last.add(tomlkit.nl())
    rows.append(toml_table(row))


def remove_row(doc: TOMLDocument, key: str, index: int) -> None:
    """Remove row ``index`` of ``key``, keeping the comments that introduce the next row."""
    rows = doc[key]
    if not isinstance(rows, AoT):
        raise TypeError(f"{key} is not an array of tables")
    trailing = _trailing_trivia(rows[index].value)
    del rows[index]
    if not trailing:
        return
    if index > 0:
        above = rows[index - 1].value
        for item in trailing:
            above.body.append((None, item))
    elif len(rows):  # the first row went: its trailing comments open the new first row
        below = rows[0].value
        body = list(below.body)
        below.body.clear()
        below._map.clear()
        for item in trailing:
            below.append(None, item)
        for name, item in body:
            below.append(name, item)


def sync_row(table: Table | Container | Any, wanted: dict[str, Any]) -> None:
    """Make ``table``'s keys and values ``wanted``'s, changing only what differs."""
    current: dict[str, Any] = table.unwrap() if hasattr(table, "unwrap") else dict(table)
    for name in [k for k in current if k not in wanted]:
        del table[name]
    for name, value in wanted.items():
        if name in current and current[name] == value:
            continue
        existing = table.get(name) if name in current else None
        if isinstance(value, dict) and isinstance(getattr(existing, "unwrap", _none)(), dict):
            sync_row(existing, value)  # keep its style: inline, dotted or a sub-table
            continue
        item = _item(value)
        last = _last_key(table)
        if name not in current and isinstance(table, Table) and last is not None:
            # after the last key: before the trailing comments and any [sub.table]
            table.value._insert_after(last, name, item)
        else:
            table[name] = item


def _none() -> None:
    return None


def _item(value: Any) -> Item:
    if isinstance(value, dict):
        inline = tomlkit.inline_table()
        for k, v in value.items():
            inline.append(k, _item(v))
        return inline
    item: Item = tomlkit.item(value)
    return item


def _last_key(table: Any) -> str | None:
    """The key after which a new key of ``table`` goes: its last key written before any
    sub-table with a header (``[equipment.attributes]``), whose section would otherwise
    swallow it; dotted keys (``bindings.flow = …``) are keys like any other."""
    container = table.value if isinstance(table, Table) else None
    if not isinstance(container, Container):
        return None
    last = None
    for key, item in container.body:
        if key is None:
            continue
        if _has_header(item):
            break
        last = str(key.key)
    return last


def _has_header(item: Item) -> bool:
    """Whether ``item`` is written as a ``[section]`` (itself or a table under it)."""
    if not isinstance(item, Table):
        return False
    if not item.is_super_table():
        return True
    return any(_has_header(child) for key, child in item.value.body if key is not None)


def _trailing_trivia(container: Container) -> list[Item]:
    """The comments (and blank lines between them) after a row's last key: they introduce
    the next row. They sit in the row's last sub-table if it ends with one."""
    last = next((item for key, item in reversed(container.body) if key is not None), None)
    keyed_last = [i for i, (key, _) in enumerate(container.body) if key is not None]
    tail = container.body[keyed_last[-1] + 1 :] if keyed_last else container.body
    if not any(isinstance(item, Comment) for _, item in tail) and isinstance(last, Table):
        return _trailing_trivia(last.value)
    out: list[Item] = [item for _, item in tail if isinstance(item, Whitespace | Comment)]
    while out and not isinstance(out[0], Comment):  # the blank line stays with the row above
        out.pop(0)
    return out
