"""npm packages for the interop tests: installed once into ``.cache/`` (ignored by git).

A missing node/npm or a failed install skips the test locally and fails it under CI
(``CI=true``), where the interop checks are required.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def in_ci() -> bool:
    """True when running under CI, where interop checks may not be skipped."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) the current test."""
    if in_ci():
        pytest.fail(f"interop is required in CI: {reason}")
    pytest.skip(f"interop unavailable: {reason}")


def installed_version(modules: Path, package: str) -> str | None:
    """The version of ``package`` in ``modules`` (a node_modules folder), if installed."""
    try:
        manifest = json.loads((modules / package / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("version")


def npm_modules(package: str, version: str, *, env_var: str, default_dir: Path) -> Path:
    """A ``node_modules`` folder holding ``package@version``, installed on first use into
    ``$env_var`` or ``default_dir``."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm must be on PATH")
    install_dir = Path(os.environ.get(env_var) or default_dir)
    modules = install_dir / "node_modules"
    if installed_version(modules, package) != version:
        install_dir.mkdir(parents=True, exist_ok=True)
        command = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"]
        command += ["--prefix", str(install_dir), f"{package}@{version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        except subprocess.TimeoutExpired:
            unavailable("npm install timed out")
        if done.returncode != 0:
            unavailable(f"npm install failed: {done.stderr.strip()[-500:]}")
        if installed_version(modules, package) != version:
            unavailable(f"npm did not install {package}@{version}")
    return modules


def run_node(
    script: str, script_name: str, modules: Path, workdir: Path, cases: list[dict]
) -> dict:
    """Run a node ``script`` (written to ``workdir/script_name``) with ``modules`` and a JSON
    file of ``cases``; return its JSON answer, which must name every case."""
    cases_file = workdir / "cases.json"
    script_file = workdir / script_name
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    script_file.write_text(script, encoding="utf-8")
    done = subprocess.run(
        ["node", str(script_file), str(modules), str(cases_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert set(results) == {case["name"] for case in cases}
    return results
