"""The README documents every setting hookline reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookline.config import SETTINGS_HELP

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("name", sorted(SETTINGS_HELP))
def test_every_setting_is_in_the_readme(name):
    assert f"`{name}`" in README.read_text(encoding="utf-8")
