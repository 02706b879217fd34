"""The protocol package stands alone: importing every module loads no web framework, ORM or HTTP server."""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

SERVER_MODULES = ("flask", "sqlalchemy", "alembic", "gunicorn", "werkzeug", "safeharbor_common")


def test_every_module_imports_without_server_modules() -> None:
    script = (
        "import json, pkgutil, importlib, sys, safeharbor_protocol\n"
        "for m in pkgutil.iter_modules(safeharbor_protocol.__path__):\n"
        "    importlib.import_module('safeharbor_protocol.' + m.name)\n"
        f"print(json.dumps(sorted(n for n in {SERVER_MODULES!r} if n in sys.modules)))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                                       text=True).stdout)
    assert loaded == []


def test_declared_dependencies_are_only_the_formats_needs() -> None:
    requires = metadata.requires("safeharbor-protocol") or []
    names = {r.split(">")[0].split("=")[0].split("[")[0].split(";")[0].strip().lower() for r in requires}
    assert names == {"cryptography", "rfc8785"}
