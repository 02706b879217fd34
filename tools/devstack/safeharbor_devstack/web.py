"""The web app beside the stack (dev tool): `vite preview` serves the built `web/dist` and proxies `/v1`
and `/.well-known` to the gateway and `/stream` (websocket included) to Stream or the emulator, so the
browser talks to one origin under a strict CSP (web/vite.config.ts). Started only when the app is built
(`make run` builds it) and Node.js is installed; the stack runs without it otherwise.

Where nginx is installed, the production edge (deploy/nginx/templates/safeharbor.conf.template) also serves
the same build over TLS with HSTS, the API and Stream under its origin, as compose and k8s serve it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .edge import Edge, nginx_binary, start_edge, write_self_signed
from .stack import Stack, _wait_http, free_port

WEB_DEFAULT_PORT = 5173
EDGE_DEFAULT_PORT = 8443


def web_dist(stack: Stack) -> Path:
    # The browser tests build into a folder of their own: runs sharing a working tree keep off each other.
    return Path(os.environ.get("SAFEHARBOR_WEB_DIST") or stack.settings.root / "web" / "dist")


def start_web(stack: Stack, port: int) -> str | None:
    """Spawn the static server as one more stack process (stopped with the rest); its URL, or None."""
    root = stack.settings.root
    vite = root / "node_modules" / "vite" / "bin" / "vite.js"
    dist = web_dist(stack)
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


def start_web_edge(stack: Stack, https_port: int) -> Edge | None:
    """nginx with the production edge config in front of the gateway, serving the built app; None without
    nginx or a build. Its certificate is a throwaway self-signed one (var/edge/tls/tls_cert): a browser
    warns; the browser tests trust exactly that key. HSTS is never kept for an IP address such as 127.0.0.1."""
    dist = web_dist(stack)
    if nginx_binary() is None or not (dist / "index.html").exists():
        return None
    folder = stack.settings.var_dir / "edge"
    tls = folder / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    write_self_signed(tls / "tls_cert", tls / "tls_key")
    return start_edge(gateway=stack.gateway_url.removeprefix("http://"), tmp=folder / "nginx", tls_dir=tls,
                      https_port=https_port, http_port=free_port(), health_port=free_port(), workers="1",
                      connections=1024, web_root=dist, stream=stack.emulator_url)
