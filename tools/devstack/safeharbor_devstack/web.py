"""The web app beside the stack (dev tool): `vite preview` serves the built `web/dist` and proxies `/v1`
and `/.well-known` to the gateway and `/stream` (websocket included) to Stream or the emulator, so the
browser talks to one origin under a strict CSP (web/vite.config.ts). Started only when the app is built
(`make run` builds it) and Node.js is installed; the stack runs without it otherwise."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .stack import Stack, _wait_http

WEB_DEFAULT_PORT = 5173


def start_web(stack: Stack, port: int) -> str | None:
    """Spawn the static server as one more stack process (stopped with the rest); its URL, or None."""
    root = stack.settings.root
    vite = root / "node_modules" / "vite" / "bin" / "vite.js"
    # The browser tests build into a folder of their own: runs sharing a working tree keep off each other.
    dist = Path(os.environ.get("SAFEHARBOR_WEB_DIST") or root / "web" / "dist")
    node = shutil.which("node")
    if node is None or not vite.exists() or not (dist / "index.html").exists():
        return None
    env = {**os.environ, "SAFEHARBOR_GATEWAY_URL": stack.gateway_url, "SAFEHARBOR_STREAM_URL": stack.emulator_url}
    command = [node, str(vite), "preview", "web", "--outDir", str(dist), "--host", "127.0.0.1", "--port", str(port),
               "--strictPort"]
    stack._spawn("web", command, env)  # same package; the lead's launcher rewrite may fold it in
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/", timeout=30, process=stack.processes["web"])
    except RuntimeError:
        stack.kill("web")  # e.g. the port is taken: the stack goes on without the web app
        raise
    return url
