"""keydir's real answers against the public OpenAPI document the gateway serves
(gateway/safeharbor_gateway/public-openapi.json), with the integration suite's own check
(tests/answer_contract.py): the raw log leaves, whose published schema once required proofs the answer
never had and left out `start`, `end` and `tree_size`, and the other monitoring and lookup answers."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import DeviceKeys, KeydirEnv, register, rotate
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[2]


def _answer_contract() -> ModuleType:
    """tests/answer_contract.py, which is not on this suite's path (registered first: its dataclasses look
    their module up while being built)."""
    if "answer_contract" in sys.modules:
        return sys.modules["answer_contract"]
    spec = importlib.util.spec_from_file_location("answer_contract", ROOT / "tests" / "answer_contract.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules["answer_contract"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def contract() -> object:
    document = json.loads((ROOT / "gateway" / "safeharbor_gateway" / "public-openapi.json").read_text())
    return _answer_contract().AnswerContract(document)


def test_monitoring_answers_match_the_published_schema(
    client: FlaskClient, keydir_env: KeydirEnv, contract: object
) -> None:
    alice = DeviceKeys("alice", "phone")
    register(client, keydir_env, alice)
    rotate(client, keydir_env, alice)
    register(client, keydir_env, DeviceKeys("bob"))
    client.post("/v1/keys/alice/devices/phone/revoke", json={"reason": "lost"}, headers=keydir_env.auth("alice"))
    auth = keydir_env.auth("bob")
    paths = [
        "/v1/keys/log/leaves?start=0",
        "/v1/keys/log/leaves?start=1&end=3",
        "/v1/keys/log/leaves?start=99",  # past the end: no leaves
        "/v1/keys?users=alice,bob,nobody",
        "/v1/keys/alice/history",
        "/v1/keys/proof/consistency?from=1",
    ]
    answers = {path: client.get(path, headers=auth) for path in paths}
    leaves = answers["/v1/keys/log/leaves?start=0"].get_json()
    assert [leaf["kind"] for leaf in leaves["leaves"]] == ["key", "key", "key", "revocation"]
    assert (leaves["start"], leaves["end"], leaves["tree_size"]) == (0, 4, 4)
    assert answers["/v1/keys/log/leaves?start=99"].get_json() == {"leaves": [], "start": 99, "end": 99,
                                                                  "tree_size": 4}
    for path, answer in answers.items():
        assert answer.status_code == 200, path
        problems = contract.problems(  # type: ignore[attr-defined]
            "GET", path.split("?")[0], answer.status_code, answer.content_type, answer.get_data())
        assert problems == [], problems
