"""`make install` builds the packages without warnings (issue 18): a deprecation the build backend reports is
fixed in the pyproject.toml that causes it, not scrolled past. Every package has the same [build-system], so
one stands for all; it is built both ways it is installed: editable (`make install`) and as a wheel (the
Dockerfiles). With constraints.txt's setuptools in the venv (`make install` puts it there) the builds need no
network; otherwise that setuptools is fetched first, and the test skips if no index answers.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "libs" / "safeharbor-common"
WARNING = re.compile(r"warn|deprecat", re.IGNORECASE)


def _pinned(name: str) -> str:
    text = (ROOT / "constraints.txt").read_text()
    (version,) = re.findall(rf"^{re.escape(name)}==(\S+)$", text, re.MULTILINE | re.IGNORECASE)
    return version


def _install_environment() -> dict[str, str]:
    """What `make install` runs pip with: its one notice filter, and no pip configuration of this machine."""
    (notice,) = re.findall(r"^QUIET_NOTICE := PYTHONWARNINGS='([^']*)'$", (ROOT / "Makefile").read_text(),
                           re.MULTILINE)
    return {**os.environ, "PYTHONWARNINGS": notice, "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _pip(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def test_every_package_builds_with_the_same_backend() -> None:
    """What the one build below shows holds for all: one [build-system], which constraints.txt's pin meets."""
    paths = [*ROOT.glob("*/pyproject.toml"), *ROOT.glob("*/*/pyproject.toml")]
    systems = {str(path.parent.relative_to(ROOT)): tomllib.loads(path.read_text())["build-system"]
               for path in paths if "node_modules" not in path.parts}
    assert len(systems) >= 10 and all(system == systems["libs/safeharbor-common"] for system in systems.values()), \
        systems
    assert systems["libs/safeharbor-common"]["build-backend"] == "setuptools.build_meta"
    (requirement,) = map(Requirement, systems["libs/safeharbor-common"]["requires"])
    assert requirement.name == "setuptools" and requirement.specifier.contains(_pinned("setuptools"))


def test_building_a_package_prints_no_warning(tmp_path: Path) -> None:
    env = _install_environment()
    pinned = _pinned("setuptools")
    try:
        present = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        present = None
    if present != pinned:  # an older venv: build with the pinned backend, from the index
        backend = tmp_path / "backend"
        fetched = _pip("install", "--quiet", "--no-deps", "--target", str(backend), f"setuptools=={pinned}",
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        if fetched.returncode != 0:
            pytest.skip(f"setuptools {pinned} is not in the venv (make install) and no index answers: "
                        f"{fetched.stderr.strip()[-300:]}")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(backend), env.get("PYTHONPATH")]))
    # A copy: building writes egg-info and build/ next to the sources.
    source = tmp_path / "source"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    offline = ("--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir")
    # --target: the editable install lands in the temporary folder and leaves the venv's alone.
    editable = _pip("install", *offline, "--target", str(tmp_path / "editable"), "-e", str(source), env=env)
    wheel = _pip("wheel", *offline, "--wheel-dir", str(tmp_path / "wheels"), str(source), env=env)
    for build in (editable, wheel):
        assert build.returncode == 0, build.stdout + build.stderr
        output = build.stdout + build.stderr
        assert not WARNING.search(output), output
    assert [path.name for path in (tmp_path / "wheels").iterdir()] == ["safeharbor_common-0.1.0-py3-none-any.whl"]
    assert list((tmp_path / "editable").glob("__editable__*safeharbor_common*"))
