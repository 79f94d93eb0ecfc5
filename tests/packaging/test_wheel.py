"""`python -m build` makes a wheel and an sdist that install and work on their own.

The wheel goes into a fresh virtual environment with `--no-deps --no-index`, so the test needs
no network: the dependencies (httpx, anyio, ... and the `[cli]` extra's) are borrowed from the
environment running the tests, appended after the new environment's own site-packages, where
the wheel's copy of the package comes first. Nothing of the checkout is on the path.

Run on its own with `pytest -m packaging` (it takes a few seconds: building is about one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import quickchat_async


pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
VERSION = quickchat_async.__version__

#: Run inside the new environment: what a user's first import sees.
PROBE = """
import importlib.metadata, json, pathlib
import quickchat_async
from quickchat_async import Httpx2Transport
package = pathlib.Path(quickchat_async.__file__).parent
print(json.dumps({
    "file": quickchat_async.__file__,
    "version": quickchat_async.__version__,
    "metadata_version": importlib.metadata.version("quickchat-async"),
    "py_typed": (package / "py.typed").is_file(),
    "kb": (package / "emulator" / "kb.json").is_file(),
    "user_agent": Httpx2Transport().user_agent,
    "extras": importlib.metadata.metadata("quickchat-async").get_all("Provides-Extra"),
}))
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command to completion (it must succeed); return its stdout."""
    done = subprocess.run(  # noqa: S603 -- our own build and the environment we made
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module", name="dist")
def _dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel built from the checkout, as `python -m build` makes them."""
    out = tmp_path_factory.mktemp("dist")
    # With the build backend at hand, build without an isolated env: no download needed.
    isolation = ["--no-isolation"] if importlib.util.find_spec("hatchling") else []
    run(sys.executable, "-m", "build", *isolation, "--outdir", out, ROOT, cwd=ROOT)
    return out


@pytest.fixture(scope="module", name="installed")
def _installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; yields its `bin` directory."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False, symlinks=os.name != "nt")
    scripts = "Scripts" if os.name == "nt" else "bin"
    python = home / scripts / ("python.exe" if os.name == "nt" else "python")
    (wheel,) = dist.glob("*.whl")
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
        "--no-deps", "--no-index", wheel,
        cwd=home,
    )  # fmt: skip
    # The dependencies come from the environment running the tests, after the venv's own.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=home)
    borrowed = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site.strip(), "_borrowed_dependencies.pth").write_text(
        "".join(f"{path}\n" for path in sorted(borrowed)), encoding="utf-8"
    )
    return home / scripts


def clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on the path."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}


class TestDistributions:
    def test_wheel_holds_the_package_and_its_data(self, dist):
        """The wheel has the package, py.typed, the bundled KB, the CLI and its console script."""
        (wheel,) = dist.glob(f"quickchat_async-{VERSION}-py3-none-any.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            entry_points = archive.read(
                f"quickchat_async-{VERSION}.dist-info/entry_points.txt"
            ).decode()
        assert {
            "quickchat_async/__init__.py",
            "quickchat_async/py.typed",
            "quickchat_async/emulator/kb.json",
            "quickchat_async/cli/__init__.py",
            "quickchat_async/cli/load.py",
        } <= names
        assert not any(name.startswith(("tests/", "docs/")) for name in names)
        assert "quickchat-async = quickchat_async.cli:main" in entry_points

    def test_sdist_holds_what_rebuilds_and_tests_it(self, dist):
        """The sdist has the metadata, sources, tests, docs and changelog."""
        (sdist,) = dist.glob(f"quickchat_async-{VERSION}.tar.gz")
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        assert {
            "pyproject.toml",
            "README.md",
            "CHANGELOG.md",
            "quickchat_async/py.typed",
            "tests/conftest.py",
            "docs/conf.py",
        } <= names


class TestInstalledWheel:
    def test_imports_from_the_wheel_with_its_version(self, installed, tmp_path):
        """The installed package is the wheel's, ships py.typed, and names its version."""
        python = next(installed.glob("python*"))
        found = json.loads(run(python, "-c", PROBE, cwd=tmp_path, env=clean_env()))
        assert Path(found["file"]).is_relative_to(installed.parent)
        assert found["version"] == found["metadata_version"] == VERSION
        assert found["py_typed"]
        assert found["kb"]
        assert found["user_agent"].startswith(f"quickchat-async/{VERSION} ")
        assert {"cli", "emulator", "aiohttp", "redis"} <= set(found["extras"])

    def test_quickchat_async_demo_runs(self, installed, tmp_path):
        """`quickchat-async demo` runs from the installed wheel, with nothing configured."""
        script = installed / ("quickchat-async.exe" if os.name == "nt" else "quickchat-async")
        env = {k: v for k, v in clean_env().items() if not k.startswith("QUICKCHAT_")}
        out = run(script, "demo", cwd=tmp_path, env=env)
        assert out.strip()
