"""The SDK installs and runs without any server package (Flask, SQLAlchemy, alembic, gunicorn, safeharbor-common).

Two views: the dependency closure `pip` would install (in-repo packages from their pyproject.toml, the rest
from the installed distributions' metadata), and the modules importing every SDK module actually loads.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SERVER_DISTRIBUTIONS = {"flask", "werkzeug", "sqlalchemy", "alembic", "gunicorn", "safeharbor-common", "psycopg"}
SERVER_MODULES = ("flask", "werkzeug", "sqlalchemy", "alembic", "gunicorn", "safeharbor_common", "psycopg")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _in_repo_projects() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for pyproject in ROOT.glob("**/pyproject.toml"):
        if "node_modules" in pyproject.parts or ".venv" in pyproject.parts:
            continue
        found[_normalise(tomllib.loads(pyproject.read_text())["project"]["name"])] = pyproject
    return found


def _requirements(name: str, projects: dict[str, Path]) -> list[str]:
    if name in projects:
        declared: list[str] = tomllib.loads(projects[name].read_text())["project"].get("dependencies", [])
    else:
        try:
            declared = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            return []
    # Requirements behind an extra are not installed by a plain `pip install`.
    unconditional = [r for r in declared if "extra ==" not in r.partition(";")[2]]
    return [_normalise(re.split(r"[<>=!~\[;( ]", r.strip(), maxsplit=1)[0]) for r in unconditional]


def dependency_closure(root: str) -> dict[str, str]:
    """Every distribution installing `root` pulls in, mapped to the one that asked for it."""
    projects = _in_repo_projects()
    wanted_by: dict[str, str] = {}
    todo = [_normalise(root)]
    while todo:
        name = todo.pop()
        for needed in _requirements(name, projects):
            if needed not in wanted_by and needed != _normalise(root):
                wanted_by[needed] = name
                todo.append(needed)
    return wanted_by


def test_installing_the_sdk_pulls_no_server_distribution() -> None:
    closure = dependency_closure("safeharbor-client")
    assert "safeharbor-protocol" in closure and "cryptography" in closure  # the walk does reach dependencies
    pulled = {name: closure[name] for name in SERVER_DISTRIBUTIONS if name in closure}
    assert pulled == {}, f"the SDK pulls server packages (package: required by): {pulled}"


def test_the_closure_walk_sees_server_packages_where_they_are() -> None:
    """The same walk on a service finds them, so an empty answer above is not a walk that saw nothing."""
    closure = dependency_closure("safeharbor-keydir")
    assert {"flask", "sqlalchemy", "alembic", "gunicorn", "safeharbor-common"} <= set(closure)


def test_every_sdk_module_imports_without_server_modules() -> None:
    script = (
        "import importlib, json, pkgutil, sys\n"
        f"blocked = {SERVER_MODULES!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in blocked:\n"
        "            raise ImportError('server module imported by the SDK: ' + name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "import safeharbor_client\n"
        "names = [m.name for m in pkgutil.iter_modules(safeharbor_client.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module('safeharbor_client.' + name)\n"
        "print(json.dumps(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"client", "cli", "keys", "directory", "envelope"} <= set(json.loads(done.stdout))
