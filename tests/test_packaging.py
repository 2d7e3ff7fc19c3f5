"""The distribution's package list covers every package in the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *relative.parts]) if relative.parts else package)
    assert found <= listed, f"add to pyproject packages: {sorted(found - listed)}"
    assert "stages" not in listed and "adapters" not in listed  # PyPI's `adapters` owns that


def test_stages_and_adapters_install_under_cascade() -> None:
    import cascade.adapters
    import cascade.stages

    assert Path(cascade.stages.__file__).parent == ROOT / "stages"
    assert Path(cascade.adapters.__file__).parent == ROOT / "adapters"
