"""The gateway's compliance controls (issue 17): served to audit-service on the internal listener only,
measured from the running gateway (a loosened setting turns its line to fail)."""
from __future__ import annotations

from pathlib import Path

import requests
from safeharbor_common import compliance
from safeharbor_common.service_identity import ServiceTokenSigner, generate_keypair, load_private_key
from test_served_gateway import BODY_TIMEOUT, serve_gateway


def test_controls_only_on_the_internal_listener_only_for_audit_and_measured_live(tmp_path: Path) -> None:
    audit_seed, audit_pub = generate_keypair()
    push_seed, push_pub = generate_keypair()
    audit = ServiceTokenSigner(name="audit", private_key=load_private_key(audit_seed))
    push = ServiceTokenSigner(name="push", private_key=load_private_key(push_seed))
    # RATE_LIMIT_PER_IP=100000 a minute (serve_gateway's, for its own tests) is far above policy: fail.
    with serve_gateway(tmp_path, SERVICE_PUBLIC_KEYS=f"audit={audit_pub},push={push_pub}") as served:
        path = compliance.CONTROLS_PATH
        public = requests.get(served.url + path, headers=audit.headers_for("gateway"), timeout=5)
        assert public.status_code == 404  # never on the public port, whoever asks
        spoofed = requests.get(served.url + path, timeout=5, headers={
            **audit.headers_for("gateway"), "Host": f"127.0.0.1:{served.internal_port}"})
        assert spoofed.status_code == 404

        internal = f"http://127.0.0.1:{served.internal_port}{path}"
        assert requests.get(internal, timeout=5).status_code == 401
        assert requests.get(internal, headers=push.headers_for("gateway"), timeout=5).status_code == 403
        answer = requests.get(internal, headers=audit.headers_for("gateway"), timeout=5)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["service"] == "gateway" and body["version"] == compliance.CONTROLS_VERSION
        controls = {c["id"]: c for c in body["controls"]}
        assert set(controls) == {s.id for s in compliance.CATALOGUE if s.service == "gateway"}
        assert controls["gateway.rate_limits"]["status"] == "fail"
        assert controls["gateway.rate_limits"]["evidence"]["per_ip"] == {"requests": 100000, "window_s": 60}
        assert controls["gateway.body_deadline"]["status"] == "pass"
        assert controls["gateway.body_deadline"]["evidence"]["body_read_timeout_s"] == BODY_TIMEOUT
        assert controls["gateway.revocation_feed"]["status"] == "pass"  # the fake feed answers
        assert controls["gateway.transport"]["status"] == "warn"  # dev, no TLS here, no edge trusted
        assert controls["gateway.trusted_proxies"]["status"] == "pass"

    with serve_gateway(tmp_path, SERVICE_PUBLIC_KEYS=f"audit={audit_pub}", RATE_LIMIT_PER_IP="600",
                       TRUSTED_PROXIES="0.0.0.0/0", BODY_READ_TIMEOUT="120") as served:
        answer = requests.get(f"http://127.0.0.1:{served.internal_port}{compliance.CONTROLS_PATH}",
                              headers=audit.headers_for("gateway"), timeout=5)
        controls = {c["id"]: c["status"] for c in answer.json()["controls"]}
        assert controls["gateway.rate_limits"] == "pass"
        assert controls["gateway.trusted_proxies"] == "fail"  # every address may claim any client address
        assert controls["gateway.body_deadline"] == "fail"
