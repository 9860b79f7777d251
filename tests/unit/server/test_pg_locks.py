"""Advisory lock classes: each use of a PostgreSQL advisory lock has a class of its own."""

from __future__ import annotations

from shopfloor.server import pg_locks


def test_no_two_uses_share_an_advisory_lock_class() -> None:
    classes = {name: getattr(pg_locks, name) for name in pg_locks.__all__}
    assert len(set(classes.values())) == len(classes), classes
    assert all(0 < value < 2**31 for value in classes.values())  # an int4 key


def test_every_lock_class_is_allocated_in_pg_locks() -> None:
    """A class written as a number elsewhere is how two branches once picked the same one."""
    import re
    from pathlib import Path

    import shopfloor

    root = Path(shopfloor.__file__).parent
    literal = re.compile(r"\b0x5[fF][0-9a-fA-F]{2}\b")
    stray = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if path.name != "pg_locks.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert stray == [], "allocate advisory lock classes in shopfloor.server.pg_locks"
