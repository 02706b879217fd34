"""The real keydir-service behind the Python SDK's test gateway (clients/python/tests/ministack.py), for
clients/js's monitor test: prints one JSON line {gateway, user_id, password}, serves until stdin closes."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python" / "tests"))

from ministack import MiniStack  # importable through the path above


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sh-js-keydir-") as root:
        stack = MiniStack(Path(root)).start()
        user = stack.add_user("mia", "patient")
        print(json.dumps({"gateway": stack.gateway_url, "user_id": user["id"], "password": user["password"]}),
              flush=True)
        sys.stdin.read()
        stack.stop()


if __name__ == "__main__":
    main()
