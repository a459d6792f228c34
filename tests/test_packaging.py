"""The built wheel, installed away from the checkout: its import names, `--version`, and the
example manifests the demo needs (package data)."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from audiobatch import __version__

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # builds and installs a wheel (20-80 s here)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a fresh venv
    that borrows this venv's packages through a .pth file; returns the venv."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(folder / "dist"), str(ROOT)], check=True, capture_output=True)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    [wheel] = (folder / "dist").glob("audiobatch-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True)
    return venv


def test_installed_names_version_and_example_manifests(installed: Path, tmp_path: Path) -> None:
    python = installed / "bin" / "python"
    site = next((installed / "lib").glob("python3*/site-packages"))
    top_level = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth"))}
    assert top_level - {"__pycache__"} == {"audiobatch"}  # no `flows`, `tasks`, `localmodel`
    probe = ("import audiobatch, audiobatch.flows.cli, audiobatch.tasks.run.context, audiobatch.localmodel.app\n"
             "import importlib.util as u\n"
             "print(audiobatch.__file__)\n"
             "print([n for n in ('flows', 'tasks', 'localmodel') if u.find_spec(n)])\n")
    out = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].startswith(str(site)) and out[1] == "[]"
    version = subprocess.run([str(installed / "bin" / "audiobatch"), "--version"], cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == f"audiobatch {__version__}" and __version__ != "0+unknown"
    # The demo's manifests and audio come with the package: estimate them from the install.
    examples = site / "audiobatch" / "examples"
    for manifest, kind in (("episodes.csv", "transcribe"), ("articles.csv", "narrate")):
        result = subprocess.run([str(installed / "bin" / "audiobatch"), "estimate", str(examples / manifest)],
                                cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0 and f"({kind}):" in result.stdout, result.stderr
        assert "not counted (fix" not in result.stdout  # every example file is there
    wheel_names = zipfile.ZipFile(next(installed.parent.glob("dist/*.whl"))).namelist()
    assert {name.split("/")[0] for name in wheel_names} == {"audiobatch", f"audiobatch-{__version__}.dist-info"}
