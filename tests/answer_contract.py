"""Every answer the integration suite receives from the gateway, checked against the public OpenAPI document.

`watch(base_url)` wraps requests' `Session.send` (the suite's `Api` client and the SDK both send through it):
each answer from `base_url` is checked (status documented for the operation, error body and code as
docs/API.md fixes them, a JSON body against the operation's response schema) and each mismatch is kept;
`tests/conftest.py` fails the test that received it. Cost: one jsonschema validation per JSON answer
(validators compiled once per schema).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

_DOCUMENT_URI = "urn:safeharbor:public-openapi"
_PARAM = re.compile(r"\\\{[A-Za-z_][A-Za-z0-9_]*\\\}")


@dataclass(frozen=True)
class _Operation:
    template: str
    statuses: frozenset[str]
    schemas: Mapping[str, str]  # status -> $ref of its JSON body


@dataclass
class AnswerContract:
    """Checks answers against one OpenAPI document (the one the gateway serves)."""

    document: Mapping[str, Any]
    _paths: list[tuple[re.Pattern[str], int, str]] = field(init=False)
    _validators: dict[str, Draft202012Validator] = field(init=False, default_factory=dict)
    _registry: Registry = field(init=False)

    def __post_init__(self) -> None:
        self._registry = Registry().with_resource(_DOCUMENT_URI, DRAFT202012.create_resource(dict(self.document)))
        paths = []
        for template in self.document["paths"]:
            pattern = re.compile(_PARAM.sub("[^/]+", re.escape(template)))
            paths.append((pattern, template.count("{"), template))
        # A literal path wins over a template that also matches it (/v1/keys/backup over /v1/keys/{user_id}).
        self._paths = sorted(paths, key=lambda entry: entry[1])
        self._error_statuses: dict[str, list[int]] = dict(self.document["x-safeharbor-error-statuses"])

    def operation(self, method: str, path: str) -> _Operation | None:
        for pattern, _, template in self._paths:
            if pattern.fullmatch(path):
                spec = self.document["paths"][template].get(method.lower())
                if spec is None:
                    return None
                schemas = {
                    status: answer["content"]["application/json"]["schema"]["$ref"]
                    for status, answer in spec["responses"].items()
                    if "$ref" in answer.get("content", {}).get("application/json", {}).get("schema", {})
                }
                return _Operation(template, frozenset(spec["responses"]), schemas)
        return None

    def problems(self, method: str, path: str, status: int, content_type: str, body: bytes | None) -> list[str]:
        """What is wrong with one answer (empty: it conforms). `body` None: not read (streamed)."""
        where = f"{method} {path} -> {status}"
        if status >= 400:
            return [f"{where}: {p}" for p in self._error_problems(status, content_type, body)]
        operation = self.operation(method, path)
        if operation is None:
            return [f"{where}: a success answer for an operation the document does not have"]
        if str(status) not in operation.statuses and status != 304:
            return [f"{where}: status not documented for {operation.template} "
                    f"(documented: {sorted(operation.statuses)})"]
        ref = operation.schemas.get(str(status))
        if ref is None or body is None or method == "HEAD":
            return []
        if not content_type.startswith("application/json"):
            return [f"{where}: documented as JSON ({ref}), answered {content_type or 'no content type'}"]
        return [f"{where}: {p}" for p in self._schema_problems(ref, body)]

    def _error_problems(self, status: int, content_type: str, body: bytes | None) -> list[str]:
        if body is None:
            return []
        if not content_type.startswith("application/json"):
            return [f"an error answered as {content_type or 'no content type'}, not the JSON error shape"]
        problems = self._schema_problems("#/components/schemas/Error", body)
        if problems:
            return problems
        code = json.loads(body)["error"]["code"]
        if status not in self._error_statuses.get(code, []):
            return [f"error code {code!r} with status {status} (docs/API.md: {self._error_statuses.get(code)})"]
        return []

    def _schema_problems(self, ref: str, body: bytes) -> list[str]:
        try:
            value = json.loads(body)
        except ValueError:
            return ["the body is not JSON"]
        validator = self._validators.get(ref)
        if validator is None:
            validator = Draft202012Validator({"$ref": _DOCUMENT_URI + ref}, registry=self._registry)
            self._validators[ref] = validator
        return [
            f"{ref.rsplit('/', 1)[-1]} at /{'/'.join(str(p) for p in error.absolute_path)}: {error.message[:300]}"
            for error in validator.iter_errors(value)
        ][:5]


@dataclass
class AnswerWatch:
    """The mismatches seen since the last `take()`."""

    contract: AnswerContract
    base_url: str
    seen: list[str] = field(default_factory=list)
    answers: int = 0

    def check(self, request: requests.PreparedRequest, response: requests.Response, streamed: bool) -> None:
        if not (request.url or "").startswith(self.base_url):
            return
        self.answers += 1
        path = urlsplit(str(request.url)).path
        body = None if streamed else response.content
        self.seen += self.contract.problems(str(request.method), path, response.status_code,
                                            response.headers.get("Content-Type", ""), body)

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


@contextmanager
def watch(base_url: str, document: Mapping[str, Any]) -> Iterator[AnswerWatch]:
    """Checks every answer from `base_url` while the context is open."""
    answers = AnswerWatch(AnswerContract(document), base_url.rstrip("/"))
    original: Callable[..., requests.Response] = requests.Session.send

    def send(self: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = original(self, request, **kwargs)
        answers.check(request, response, streamed=bool(kwargs.get("stream")))
        return response

    requests.Session.send = send  # type: ignore[method-assign]
    try:
        yield answers
    finally:
        requests.Session.send = original  # type: ignore[method-assign]
