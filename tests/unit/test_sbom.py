"""`make sbom`: the CycloneDX SBOM lists every pinned package with its version and hashes.

The script runs as the Makefile runs it (a subprocess, no network). What it must contain
is worked out here independently of it: the runtime lock read with pip-requirements-parser
(pip-audit's parser), the npm lock read as JSON. The file is checked against the
official CycloneDX 1.6 schema (cyclonedx-python-lib ships it; no download).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from pip_requirements_parser import RequirementsFile

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "sbom.py"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
NPM_LOCK = ROOT / "web" / "package-lock.json"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def sbom_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("sbom") / "sbom.cdx.json"
    result = _run("--out", str(out), env={"SOURCE_DATE_EPOCH": "1767225600"})
    assert result.returncode == 0, result.stderr
    assert f"{out}: " in result.stdout
    return out.read_text()


@pytest.fixture(scope="module")
def sbom(sbom_text: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sbom_text)
    return data


def _by_purl(sbom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["purl"]: c for c in sbom["components"]}


def test_the_sbom_is_valid_cyclonedx_1_6(sbom_text: str) -> None:
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(sbom_text) is None
    # the validator does reject a broken document
    broken = json.loads(sbom_text)
    broken["components"][0]["hashes"][0]["alg"] = "SHA-257"
    assert validator.validate_str(json.dumps(broken)) is not None


def test_every_pinned_runtime_package_with_its_version_and_hashes(sbom: dict[str, Any]) -> None:
    components = _by_purl(sbom)
    pinned = RequirementsFile.from_file(str(RUNTIME_LOCK)).requirements
    assert len(pinned) > 20
    for requirement in pinned:
        version = str(requirement.specifier).removeprefix("==")
        name = requirement.name.lower().replace("_", "-").replace(".", "-")
        component = components.get(f"pkg:pypi/{name}@{version}")
        assert component is not None, f"{requirement.name}=={version} is missing"
        assert component["version"] == version
        expected = {tuple(h.split(":")) for h in requirement.hash_options}
        assert expected, requirement.name
        got = {(h["alg"].replace("-", "").lower(), h["content"]) for h in component["hashes"]}
        assert got == expected, requirement.name
    assert sbom["metadata"]["component"]["name"] == "shopfloor"
    # the direct dependencies hang off the application, the rest off their parents
    graph = {d["ref"]: d["dependsOn"] for d in sbom["dependencies"]}
    root = sbom["metadata"]["component"]["bom-ref"]
    assert any(ref.startswith("pkg:pypi/fastapi@") for ref in graph[root])
    starlette = next(ref for ref in components if ref.startswith("pkg:pypi/starlette@"))
    fastapi = next(ref for ref in components if ref.startswith("pkg:pypi/fastapi@"))
    assert starlette in graph[fastapi]


def test_every_npm_package_with_its_version_and_integrity(sbom: dict[str, Any]) -> None:
    components = _by_purl(sbom)
    lock = json.loads(NPM_LOCK.read_text())
    packages = {k: v for k, v in lock["packages"].items() if k}
    for key, entry in packages.items():
        name = key.rsplit("node_modules/", 1)[-1]
        purl = f"pkg:npm/{name.replace('@', '%40')}@{entry['version']}"
        component = components.get(purl)
        assert component is not None, f"{name}@{entry['version']} is missing"
        alg, _, digest = entry["integrity"].partition("-")
        assert {
            "alg": alg.upper().replace("SHA", "SHA-"),
            "content": base64.b64decode(digest).hex(),
        } in (component["hashes"]), name
    served = {c["name"] for c in sbom["components"] if c["purl"].startswith("pkg:npm/")}
    assert {"echarts", "rapidoc"} <= served


def test_the_same_locks_give_the_same_file(sbom_text: str, tmp_path: Path) -> None:
    out = tmp_path / "again.json"
    result = _run("--out", str(out), env={"SOURCE_DATE_EPOCH": "1767225600"})
    assert result.returncode == 0, result.stderr
    assert out.read_text() == sbom_text


def test_a_lock_without_hashes_is_refused_naming_the_package(tmp_path: Path) -> None:
    lock = tmp_path / "runtime.lock"
    lock.write_text("numpy==2.1.0 \\\n    --hash=sha256:" + "0" * 64 + "\nduckdb==1.1.0\n")
    result = _run("--out", str(tmp_path / "x.json"), "--runtime-lock", str(lock), "--no-npm")
    assert result.returncode == 2
    assert "duckdb==1.1.0 has no hash" in result.stderr
    assert not (tmp_path / "x.json").exists()
