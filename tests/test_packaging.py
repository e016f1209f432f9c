"""Packaging: procq installs one import name and one console script, and `procq serve` is run.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT


def test_the_wheel_installs_only_the_procq_import_name_and_its_console_script(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools leaves a build/ folder where it builds
    for folder in ("actors", "api", "client", "server"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / file, source / file)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("procq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    assert {n.split("/")[0] for n in names} == {"procq", dist_info}
    metadata = zipfile.ZipFile(wheel)
    assert metadata.read(f"{dist_info}/top_level.txt").decode().split() == ["procq"]
    assert "procq = procq.server.console:main" in metadata.read(f"{dist_info}/entry_points.txt").decode()
    assert "procq/api/ui/index.html" in names  # the dashboard ships inside the package
    sources = {
        f"procq/{p.relative_to(ROOT).as_posix()}"
        for d in ("actors", "api", "client", "server")
        for p in (ROOT / d).rglob("*.py")
    }
    assert sources <= set(names), sorted(sources - set(names))  # every subpackage ships (actors/dispatch, ...)


def test_procq_serve_help_prints_the_same_flags_as_run_py() -> None:
    def help_of(*cmd: str) -> str:
        return subprocess.run([sys.executable, *cmd, "--help"], capture_output=True, text=True, timeout=30).stdout

    served = help_of("-m", "procq.server.console", "serve")
    assert "--jobs-dir" in served and served == help_of(str(ROOT / "run.py"))


def test_the_client_package_imports_neither_the_server_nor_the_actors() -> None:
    probe = "import sys, procq.client.cli; import json; print(json.dumps([m for m in sys.modules if m.startswith('procq.')]))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    modules = json.loads(loaded.stdout)
    assert modules and all(m.startswith("procq.client") for m in modules), modules
