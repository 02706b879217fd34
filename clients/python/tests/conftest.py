import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    from ministack import MiniStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> "Iterator[MiniStack]":
    """The in-process stack (ministack.py) with four users, one per test module."""
    pytest.importorskip("safeharbor_keydir")
    pytest.importorskip("stream_emulator")
    from ministack import MiniStack

    running = MiniStack(root=tmp_path_factory.mktemp("ministack")).start()
    for name, role in (("doc", "clinician"), ("pat", "patient"), ("sam", "billing"), ("kim", "patient")):
        running.add_user(name, role)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parent of the clients' state directories."""
    return tmp_path_factory.mktemp("clients")
