"""The engine never imports py4web: only ``hookline.web`` may (DESIGN §7)."""

from __future__ import annotations

import ast
from pathlib import Path

import hookline

PACKAGE = Path(hookline.__file__).parent
WEB = PACKAGE / "web"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_engine_modules_do_not_import_web_frameworks():
    engine_files = [p for p in PACKAGE.rglob("*.py") if WEB not in p.parents]
    assert len(engine_files) >= 10
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(_imported_roots(p) & {"py4web", "ombott", "bottle"})
        for p in engine_files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_web_layer_is_where_py4web_lives():
    assert any("py4web" in _imported_roots(p) for p in WEB.rglob("*.py"))
