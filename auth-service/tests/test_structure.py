"""Issue 18: auth-service is laid out by concern and stays that way. Each room (sessions, users, mfa,
breakglass, channels, deprovisioning) is a package with its views, service functions and schemas; service
functions are keyword-only and take the context; nothing reaches Flask's `g` below the views; no module
reaches into another's private names; login is a typed state machine of small steps; service functions answer
with schema objects, not bare dicts; the settings are one typed object."""
from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

PACKAGE = Path(__file__).resolve().parents[1] / "safeharbor_auth"
ROOMS = ("sessions", "users", "mfa", "breakglass", "channels", "deprovisioning")
MAX_MODULE_LINES = 400  # service.py had 821 lines (979 by the end), streaming.py 414 (441)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("room", ROOMS)
def test_each_concern_has_its_room(room: str) -> None:
    for part in ("views", "service", "schemas"):
        assert (PACKAGE / room / f"{part}.py").is_file(), f"{room}/{part}.py"


def test_no_module_holds_several_concerns() -> None:
    rooms = [p for p in _modules() if p.relative_to(PACKAGE).parts[0] in ROOMS]
    too_long = {str(p.relative_to(PACKAGE)): n for p in rooms if (n := len(p.read_text().splitlines()))
                > MAX_MODULE_LINES}
    assert rooms and too_long == {}
    assert not (PACKAGE / "service.py").exists() and not (PACKAGE / "streaming.py").exists()


@pytest.mark.parametrize("room", ROOMS)
def test_service_functions_are_keyword_only_and_take_the_context(room: str) -> None:
    from safeharbor_auth.context import AuthContext

    module = importlib.import_module(f"safeharbor_auth.{room}.service")
    functions = [(name, fn) for name, fn in vars(module).items()
                 if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_")]
    assert functions
    for name, fn in functions:
        parameters = inspect.signature(fn).parameters
        positional = [p for p in parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert positional == [], f"{room}.service.{name} takes positional parameters"
        # A function working inside its caller's transaction takes that `db`; every other one the context.
        assert "ctx" in parameters or "db" in parameters, f"{room}.service.{name} takes no context"
        if "ctx" in parameters:
            annotation = inspect.get_annotations(fn, eval_str=True)["ctx"]
            assert annotation is AuthContext, f"{room}.service.{name}: ctx is {annotation}"


def test_below_the_views_nothing_reaches_flask() -> None:
    """Service functions get everything through their arguments: no `g`, no `current_app`, no `request`."""
    offenders = []
    for path in _modules():
        if path.name in ("views.py", "http.py", "app.py", "manage.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "flask":
                reached = {a.name for a in node.names} & {"g", "current_app", "request", "session"}
                if reached:
                    offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(reached)}")
    assert offenders == []


def test_no_module_uses_another_modules_private_names() -> None:
    offenders = []
    for path in _modules():
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        imported_modules: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else (node.module or "")
                if not base.startswith("safeharbor_auth"):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offenders.append(f"{name} imports {base}.{alias.name}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("safeharbor_auth"):
                        imported_modules.add(alias.asname or alias.name.split(".")[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id in imported_modules:
                offenders.append(f"{name} uses {node.value.id}.{node.attr}")
    assert offenders == []


def test_login_is_a_typed_state_machine_of_small_steps() -> None:
    from safeharbor_auth.sessions import login

    assert issubclass(login.LoginState, Enum)
    steps = login.STEPS
    # Every state but the last has exactly one step, and every step is small.
    assert set(steps) == set(login.LoginState) - {login.LoginState.DONE}
    for state, step in steps.items():
        assert len(inspect.getsource(step).splitlines()) <= 30, state
    assert len(inspect.getsource(login.login).splitlines()) <= 15


def test_collaborators_do_not_hold_the_flask_app() -> None:
    """One way of handing dependencies: the context. The job runner and the Stream provisioner get it (or
    what they need), not the Flask app to dig things out of."""
    from safeharbor_auth.context import AuthContext
    from safeharbor_auth.jobs import JobRunner, keydir_revoke_all
    from safeharbor_auth.provisioning import StreamProvisioner

    for collaborator in (JobRunner.__init__, StreamProvisioner.__init__, keydir_revoke_all):
        assert "app" not in inspect.signature(collaborator).parameters, collaborator.__qualname__
    annotations = inspect.get_annotations(AuthContext)  # strings (postponed evaluation)
    assert not [name for name, annotation in annotations.items() if "Flask" in str(annotation)]


def test_the_context_carries_the_typed_settings(make_app: Callable[..., Flask]) -> None:
    """Settings are one frozen dataclass on the shared base (safeharbor_common.settings), not a dict: the
    context holds it, Flask's config is made from it, overrides reach both, secrets stay out of its repr."""
    from safeharbor_auth.config import AuthSettings
    from safeharbor_auth.context import AuthContext
    from safeharbor_common.settings import ServiceSettings, settings_of

    assert issubclass(AuthSettings, ServiceSettings)
    assert inspect.get_annotations(AuthContext)["settings"] == "AuthSettings"
    assert "config" not in inspect.get_annotations(AuthContext)
    app = make_app(SESSION_IDLE_TIMEOUT="300")
    settings = app.extensions["auth"].settings
    assert type(settings) is AuthSettings and settings_of(app, AuthSettings) is settings
    assert settings.session_idle_timeout == 300 == app.config["SESSION_IDLE_TIMEOUT"]
    assert settings.audit_enabled is False is app.config["AUDIT_ENABLED"]  # a create_app override, in both
    shown = repr(settings)
    assert "session_idle_timeout=300" in shown
    assert not [name for name in ("auth_data_key", "service_private_key", "stream_api_secret") if name in shown]


# The free-form JSON documents auth-service returns on purpose, each with why it stays a plain object.
FREE_FORM = {
    "config.AuthSettings.as_config": "the settings as Flask's app.config takes them (AuthSettings is the typed form)",
    "signing.SigningKeys.jwks": "the JWKS (RFC 7517), also handed to the token verifier as its key fetcher",
    "stream.StreamGateway.channel_type": "Stream's own answer, as its SDK returns it",
    "stream.StreamGateway.find_channel": "Stream's own answer, as its SDK returns it",
    "stream.StreamGateway.create_channel": "Stream's own answer, as its SDK returns it",
    **{f"compliance.{control}": "a control's evidence: free-form per control in the controls document"
       for control in ("automatic_logoff", "unique_users", "role_map", "mfa", "lockout", "password_hashing",
                       "session_signing", "break_glass", "deprovisioning")},
}


def test_service_functions_answer_with_schema_objects_not_bare_dicts() -> None:
    """Views serialise what service functions return; a `dict[str, Any]` answer could drift from the OpenAPI
    document unseen. Every public function and method of the package (the rooms' service functions among
    them) returns a schema object, unless FREE_FORM lists it."""
    from safeharbor_auth.channels.schemas import ChannelRead
    from safeharbor_auth.jobs import Handler
    from safeharbor_common.structure import public_callables, typed_returns_problems, untyped_dict

    # The check tells the two apart, on the kinds of annotation this package uses.
    assert untyped_dict(dict[str, Any]) and untyped_dict(tuple[dict[str, Any], bool])
    assert not untyped_dict(dict[str, Handler]) and not untyped_dict(tuple[ChannelRead, bool])
    names = {name for name, _ in public_callables("safeharbor_auth")}
    assert {f"{room}.service.{fn}" for room, fn in (("sessions", "me"), ("users", "get_user"), ("mfa", "totp_confirm"),
            ("channels", "create_channel"), ("breakglass", "open_break_glass"),
            ("deprovisioning", "deactivate_user"))} <= names
    assert typed_returns_problems("safeharbor_auth", FREE_FORM) == []
