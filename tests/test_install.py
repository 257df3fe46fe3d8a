"""A built wheel carries every sub-package: installed into a fresh environment, outside the source
tree, every module imports from the installed copy and both commands run.

The fresh environment borrows this one's dependencies (its site-packages, by a ``.pth`` line) but
not its editable install of mcd-score, which is not processed from a borrowed folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from paths import ROOT

CHECK = """
import importlib, json, pkgutil, sys
import export, scorer
names = ["scorer", "export"]
for package in (scorer, export):
    names += [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
files = {name: importlib.import_module(name).__file__ for name in names}
print(json.dumps(files))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel built from this checkout installed in it."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"  # a copy: a build/ folder left in the checkout would be reused
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "tests", "demo-output"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(work / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = (work / "dist").glob("mcd_score-*.whl")
    env = work / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True)
                .stdout.strip())
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    return env


def test_every_module_imports_from_the_installed_wheel(installed: Path) -> None:
    result = subprocess.run([str(installed / "bin" / "python"), "-c", CHECK], cwd=installed,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout.strip().splitlines()[-1])
    sources = {p.relative_to(ROOT).with_suffix("").as_posix().removesuffix("/__init__")
               .replace("/", ".") for top in ("scorer", "export") for p in (ROOT / top).rglob("*.py")}
    assert set(files) == sources, "the wheel lacks modules of the source tree"
    outside = {name: path for name, path in files.items() if not path.startswith(str(installed))}
    assert not outside, f"modules imported from outside the installed wheel: {outside}"


@pytest.mark.parametrize("command, text", [("mcd-score", "Scoring options"),
                                           ("mcd-export", "Export MODEL to OUT.onnx")])
def test_the_installed_commands_run(installed: Path, command: str, text: str) -> None:
    result = subprocess.run([str(installed / "bin" / command), "--help"], cwd=installed,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert text in result.stdout


def test_the_installed_doctor_finds_its_self_test_graph(installed: Path) -> None:
    """The self-test graph and its numbers are package data: doctor runs from the wheel."""
    result = subprocess.run([str(installed / "bin" / "python"), "-c",
                             "from scorer.cli.main import main; main()", "doctor", "--json",
                             "--device", "cpu"], cwd=installed, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["self_test"]["CPUExecutionProvider"]["ok"]
