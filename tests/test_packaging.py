"""The wheel carries every module, under the one import name `voxledger`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {
    "domain": "voxledger/domain",
    "projections": "voxledger/projections",
    "adapters": "voxledger/adapters",
    "scripts": "voxledger/scripts",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("voxledger-*.whl")
    return built


def source_modules() -> set[str]:
    found = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT / folder).with_suffix("")
            found.add("/".join([package, *relative.parts]) + ".py")
    return found


def test_the_wheel_holds_every_source_module_and_nothing_named_domain_at_top_level(
    wheel: Path,
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n for n in names if n.endswith(".py")}
    assert source_modules() <= modules, sorted(source_modules() - modules)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"voxledger"}
    assert "voxledger/domain/intake.toml" in names
    console = "voxledger/adapters/console"
    assert {f"{console}/static/console.js", f"{console}/static/console.css"} <= names
    assert {f"{console}/templates/{t}" for t in ("base.html", "graph.svg", "chart.svg")} <= names


def test_every_module_imports_from_the_built_wheel(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    modules = sorted(
        m.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for m in source_modules()
    )
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(tmp_path)!r}), module.__file__\n"
        "print(len(sys.argv), 'ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
