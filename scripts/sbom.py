"""Write a CycloneDX 1.6 JSON SBOM of what a shopfloor build ships, from the lock files.

    python scripts/sbom.py [--out build/sbom.cdx.json]

Components:
- every package pinned in ``requirements/runtime.lock`` (what ``make install`` installs,
  hash-checked), with its version, package URL and the SHA-256 of every artifact the lock
  allows; the dependency graph from the lock's ``# via`` comments;
- every package in ``web/package-lock.json`` (the browser libraries the server serves, and
  what npm installs to get them), with its version, package URL and the lock's integrity
  hash (SHA-512 or SHA-1), and its licence as the lock records it.

Only the standard library and no network: it reads the locks, so the SBOM says what the
build *pins*, which is what ``--require-hashes`` and ``npm ci`` enforce. The serial number
is derived from the locks' content and the timestamp honours ``SOURCE_DATE_EPOCH``, so
the same locks give the same file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
NPM_LOCK = ROOT / "web" / "package-lock.json"
PYPROJECT = ROOT / "pyproject.toml"

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]*))?"
)
_HASH = re.compile(r"--hash=(?P<alg>sha256|sha384|sha512):(?P<hex>[0-9a-f]+)")
_VIA_ONE = re.compile(r"^\s*# via (?P<names>.+)$")
_VIA_MORE = re.compile(r"^\s*#\s{3}(?P<name>\S+)")
_ALGS = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512", "sha1": "SHA-1"}


class LockError(ValueError):
    """A lock file this script cannot read; the message names the file and line."""


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-`` (as in package URLs)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements_lock(path: Path) -> list[dict[str, Any]]:
    """Pinned packages of a ``uv pip compile --generate-hashes`` file, in file order.

    Each: ``name`` (normalised), ``version``, ``hashes`` [(alg, hex)], ``marker`` (or
    None) and ``via`` (names of the packages that require it; ``shopfloor`` for a direct
    dependency).
    """
    packages: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    in_via = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        pin = _PIN.match(line)
        if pin:
            marker = (pin["marker"] or "").strip() or None
            current = {
                "name": normalize(pin["name"]),
                "version": pin["version"],
                "hashes": [],
                "marker": marker,
                "via": [],
            }
            packages.append(current)
            in_via = False
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                raise LockError(f"{path}:{number}: not a pinned requirement: {line.strip()!r}")
            continue
        for found in _HASH.finditer(line):
            current["hashes"].append((found["alg"], found["hex"]))
        via = _VIA_ONE.match(line)
        if via:
            names = via["names"].strip()
            in_via = names == ""
            if names:
                current["via"].append(names.split(" (")[0])
            continue
        if line.strip() == "# via":
            in_via = True
            continue
        more = _VIA_MORE.match(line)
        if in_via and more:
            current["via"].append(more["name"])
    for package in packages:
        if not package["hashes"]:
            raise LockError(f"{path}: {package['name']}=={package['version']} has no hash")
        package["via"] = [normalize(name) for name in package["via"]]
    return packages


def read_npm_lock(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Packages of an npm lockfile (v2 or v3), one per name and version, and the names the
    root package depends on directly."""
    data = json.loads(path.read_text())
    entries = data.get("packages")
    if not isinstance(entries, dict):
        raise LockError(f"{path}: no 'packages' (lockfileVersion 2 or 3 is needed)")
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for key, entry in entries.items():
        if not key or entry.get("link") or entry.get("dev"):
            continue
        name = entry.get("name") or key.rsplit("node_modules/", 1)[-1]
        version = entry.get("version")
        if not version:
            raise LockError(f"{path}: {key} has no version")
        integrity = entry.get("integrity")
        if not integrity:
            raise LockError(f"{path}: {key} has no integrity hash")
        seen.setdefault(
            (name, version),
            {
                "name": name,
                "version": version,
                "integrity": integrity,
                "license": entry.get("license"),
                "resolved": entry.get("resolved"),
            },
        )
    direct = sorted(entries.get("", {}).get("dependencies", {}))
    return sorted(seen.values(), key=lambda p: (p["name"], p["version"])), direct


def integrity_hashes(integrity: str) -> list[dict[str, str]]:
    """npm's SRI strings (``sha512-<base64>``, space-separated) as CycloneDX hashes (hex)."""
    hashes = []
    for item in integrity.split():
        alg, _, digest = item.partition("-")
        if alg not in _ALGS:
            continue
        hashes.append({"alg": _ALGS[alg], "content": base64.b64decode(digest).hex()})
    return hashes


def pypi_purl(name: str, version: str) -> str:
    """The package URL of a PyPI release."""
    return f"pkg:pypi/{name}@{quote(version, safe='')}"


def npm_purl(name: str, version: str) -> str:
    """The package URL of an npm release (the scope's ``@`` encoded, as the spec says)."""
    return f"pkg:npm/{quote(name, safe='/')}@{quote(version, safe='')}"


def build_sbom(
    runtime_lock: Path = RUNTIME_LOCK,
    npm_lock: Path | None = NPM_LOCK,
    pyproject: Path = PYPROJECT,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The SBOM as a JSON-ready dict (see the module docstring)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    root_ref = pypi_purl(project["name"], project["version"])
    python = read_requirements_lock(runtime_lock)
    components: list[dict[str, Any]] = []
    depends: dict[str, list[str]] = {root_ref: []}
    refs = {p["name"]: pypi_purl(p["name"], p["version"]) for p in python}
    for package in python:
        ref = refs[package["name"]]
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": ref,
            "name": package["name"],
            "version": package["version"],
            "purl": ref,
            "hashes": [{"alg": _ALGS[alg], "content": hex_} for alg, hex_ in package["hashes"]],
        }
        if package["marker"]:
            component["properties"] = [{"name": "python:marker", "value": package["marker"]}]
        components.append(component)
        depends.setdefault(ref, [])
        for parent in package["via"]:
            parent_ref = root_ref if parent == normalize(project["name"]) else refs.get(parent)
            if parent_ref is not None:
                depends.setdefault(parent_ref, []).append(ref)
    if npm_lock is not None:
        packages, direct = read_npm_lock(npm_lock)
        by_name: dict[str, str] = {}
        for package in packages:
            ref = npm_purl(package["name"], package["version"])
            by_name.setdefault(package["name"], ref)
            component = {
                "type": "library",
                "bom-ref": ref,
                "name": package["name"],
                "version": package["version"],
                "purl": ref,
                "hashes": integrity_hashes(package["integrity"]),
            }
            if package["license"]:
                component["licenses"] = [{"expression": package["license"]}]
            components.append(component)
        depends[root_ref] += [by_name[name] for name in direct if name in by_name]
    lock_bytes = runtime_lock.read_bytes() + (npm_lock.read_bytes() if npm_lock else b"")
    serial = uuid.uuid5(
        uuid.NAMESPACE_URL, "shopfloor-sbom:" + hashlib.sha256(lock_bytes).hexdigest()
    )
    if now is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        now = datetime.fromtimestamp(int(epoch), tz=UTC) if epoch else datetime.now(tz=UTC)
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial.urn,
        "version": 1,
        "metadata": {
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "shopfloor scripts/sbom.py"}]},
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": project["name"],
                "version": project["version"],
                "purl": root_ref,
                "licenses": [{"expression": project["license"]}],
            },
        },
        "components": components,
        "dependencies": [
            {"ref": ref, "dependsOn": sorted(set(children))} for ref, children in depends.items()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: write the SBOM, print where and how many components."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "sbom.cdx.json")
    parser.add_argument("--runtime-lock", type=Path, default=RUNTIME_LOCK)
    parser.add_argument("--npm-lock", type=Path, default=NPM_LOCK)
    parser.add_argument("--no-npm", action="store_true", help="Leave out the web packages.")
    args = parser.parse_args(argv)
    try:
        sbom = build_sbom(args.runtime_lock, None if args.no_npm else args.npm_lock)
    except (LockError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(sbom, indent=2) + "\n")
    sys.stdout.write(f"{args.out}: {len(sbom['components'])} components\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
