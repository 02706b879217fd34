"""deploy/k8s rendered offline (`kubectl kustomize`) and every object validated against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields are errors); then what the manifests must say, read from the
rendered objects: one Deployment, Service, HPA and PDB per service, probes, migrations before the pods,
secrets by reference, resources, the edge's template reused, and the NetworkPolicies of issue 19."""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_compose import PACKAGES, REQUIRED, _names_read, bound_ports, gunicorn_command

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
# The schemas of the oldest Kubernetes minor release we claim (HPA autoscaling/v2 and PDB policy/v1 are GA).
KUBERNETES_VERSION = "1.32.0"
PORTS = {"gateway": 8080, "auth": 8101, "keydir": 8102, "audit": 8103, "push": 8104}
MIGRATING = ("auth", "keydir", "audit", "push")
SECRET_NAMES = ("PRIVATE_KEY", "DATA_KEY", "SIGNING_KEY", "SECRET", "DATABASE_URL", "REDIS_URL", "PUBLIC_KEYS")
INGRESS_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"  # Prometheus, for the gateway's /metrics


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("kubectl is not installed and REQUIRE_SERVICES=1")
        pytest.skip("!!! kubectl is not installed: the Kubernetes manifests are NOT rendered or validated")
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render(overlay) if o["kind"] == kind}


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if name is None or c["name"] == name)


def env_of(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in spec.get("env", [])}


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are read here"
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def test_overlays_exist() -> None:
    assert set(OVERLAYS) == {"production", "edge", *PACKAGES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    for obj in render(overlay):
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # the message names the field and the object
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
        assert obj["metadata"].get("namespace") == "safeharbor", obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_written(overlay: str) -> None:
    assert not [o for o in render(overlay) if o["kind"] == "Secret"]
    for deployment in objects(overlay, "Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert "envFrom" not in c, "each container gets the secrets it names, no more"
            for name, entry in env_of(c).items():
                if any(word in name for word in SECRET_NAMES):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], (c["name"], name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_a_pinned_image(overlay: str) -> None:
    for deployment in objects(overlay, "Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False
        for c in spec.get("initContainers", []) + spec["containers"]:
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
            assert re.search(r":[\w.-]+$|@sha256:", c["image"]) and not c["image"].endswith(":latest"), c["image"]
            security = c["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]


def test_one_deployment_service_hpa_and_pdb_per_service() -> None:
    deployments = objects("production", "Deployment")
    assert set(deployments) == {"edge", *PACKAGES}
    services, hpas, pdbs = (objects("production", k) for k in ("Service", "HorizontalPodAutoscaler",
                                                                 "PodDisruptionBudget"))
    for name, deployment in deployments.items():
        labels = pod_labels(deployment)
        assert selects(deployment["spec"]["selector"], labels)
        assert all(labels.get(k) == v for k, v in services[name]["spec"]["selector"].items())
        target = hpas[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert hpas[name]["spec"]["minReplicas"] >= 2, "one pod is no disruption budget"
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count; apply must not reset it"
        assert selects(pdbs[name]["spec"]["selector"], labels) and pdbs[name]["spec"]["minAvailable"] == 1
        strategy = deployment["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("service", sorted(PACKAGES))
def test_services_listen_where_their_images_serve_and_probe_healthz_and_readyz(service: str) -> None:
    deployment = objects("production", "Deployment")[service]
    c = container(deployment, service)
    assert "command" not in c and "args" not in c, "the image's CMD (gunicorn) serves"
    launched = gunicorn_command((ROOT / f"{PACKAGES[service].split('/')[0]}/Dockerfile").read_text())
    public, *internal_ports = bound_ports(launched)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == public == PORTS[service]
    if service == "gateway":  # its /metrics lives only on the internal listener
        assert ports == {"http": 8080, "internal": internal_ports[0]} and launched.worker_class == "gevent"
    else:
        assert set(ports) == {"http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service_ports = {p["name"]: p for p in objects("production", "Service")[service]["spec"]["ports"]}
    assert service_ports["http"]["port"] == PORTS[service] and service_ports["http"]["targetPort"] == "http"
    # Services reach each other by these names (the same as under compose).
    for other, port in PORTS.items():
        url = env_of(c).get(f"{other.upper()}_SERVICE_URL")
        assert url is None or url["value"] == f"http://{other}:{port}"
    internal = env_of(c).get("GATEWAY_INTERNAL_URL")
    gateway_internal = bound_ports(gunicorn_command((ROOT / "gateway/Dockerfile").read_text()))[1]
    assert internal is None or internal["value"] == f"http://gateway:{gateway_internal}"


@pytest.mark.parametrize("service", sorted(PACKAGES))
def test_environment_names_are_what_the_service_reads(service: str) -> None:
    c = container(objects("production", "Deployment")[service], service)
    read = _names_read(PACKAGES[service])
    assert not sorted(set(env_of(c)) - read)
    assert not sorted(REQUIRED[service] - set(env_of(c)))


@pytest.mark.parametrize("service", MIGRATING)
def test_migrations_run_before_the_new_pods(service: str) -> None:
    spec = objects("production", "Deployment")[service]["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    module = PACKAGES[service].split("/")[1]
    assert init["command"] == ["python", "-m", f"{module}.manage", "migrate"]
    assert init["image"] == container({"spec": {"template": {"spec": spec}}}, service)["image"], "same release"
    assert env_of(init)["DATABASE_URL"] == env_of(container({"spec": {"template": {"spec": spec}}}))["DATABASE_URL"]


def test_the_edge_runs_the_compose_template_unchanged_behind_an_ingress() -> None:
    maps = objects("production", "ConfigMap")
    templates = next(m for n, m in maps.items() if n.startswith("edge-templates-"))  # hashed name: rollouts follow
    shipped = (ROOT / "deploy/nginx/templates/safeharbor.conf.template").read_text()
    assert templates["data"] == {"safeharbor.conf.template": shipped}
    edge = objects("production", "Deployment")["edge"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["edge"]
    c = container(edge)
    # The image compose builds (deploy/nginx/Dockerfile: nginx and the built web app), served as compose serves it.
    assert c["image"] == "registry.example.com/safeharbor/edge:0.1.0"
    assert compose["build"]["dockerfile"] == "deploy/nginx/Dockerfile"
    env = {k: v["value"] for k, v in env_of(c).items()}
    realip = next(m for n, m in maps.items() if n.startswith("edge-realip-"))["data"]["realip.conf.template"]
    wanted = set(re.findall(r"\$\{(SAFEHARBOR_\w+)\}", shipped + realip))
    assert wanted <= set(env) and env["NGINX_ENVSUBST_FILTER"] == "^SAFEHARBOR_"
    assert env["SAFEHARBOR_GATEWAY"] == "gateway:8080"
    assert env["SAFEHARBOR_WEB_ROOT"] == compose["environment"]["SAFEHARBOR_WEB_ROOT"]
    assert env["SAFEHARBOR_STREAM"].startswith("https://")
    ipaddress.ip_network(env["SAFEHARBOR_INGRESS_CIDR"])
    volumes = {v["name"]: v for v in edge["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    sources = [s["configMap"]["name"] for s in volumes[mounts["/etc/nginx/templates"]]["projected"]["sources"]]
    assert sources == [templates["metadata"]["name"], next(n for n in maps if n.startswith("edge-realip-"))]
    tls = volumes[mounts[env["SAFEHARBOR_TLS_DIR"]]]["secret"]
    assert {i["path"] for i in tls["items"]} == {"tls_cert", "tls_key"}  # the file names the template reads
    assert {p["containerPort"] for p in c["ports"]} == {int(env["SAFEHARBOR_HTTPS"])}
    (ingress,) = objects("production", "Ingress").values()
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": "edge", "port": {"name": "https"}}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
    assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]


# -- NetworkPolicies ------------------------------------------------------------------------------------------


def callers_in_code() -> dict[str, set[tuple[str, str]]]:
    """Who calls whom on which listener, read from the code: a service calls another when its package reads
    that one's URL setting (X_SERVICE_URL: the service's port; GATEWAY_INTERNAL_URL: the gateway's internal
    listener). The gateway's calls are its routes; the others' are internal endpoints, JWKS (a public path
    fetched by every verifier), the revocation feed and the compliance controls."""
    calls: dict[str, set[tuple[str, str]]] = {name: set() for name in PACKAGES}
    # Settings every service reads through the shared base class (safeharbor_common.settings.ServiceSettings).
    shared = (ROOT / "libs/safeharbor-common/safeharbor_common/settings.py").read_text()
    shared_base = shared[shared.index("class ServiceSettings"):]
    shared_base = shared_base[:shared_base.index("\ndef ")]
    for caller, package in PACKAGES.items():
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            if re.search(r"\(ServiceSettings\)", text):
                text += shared_base
            for callee in re.findall(r"[\"']([A-Z]+)_SERVICE_URL[\"']", text):
                if callee.lower() != caller:
                    calls[callee.lower()].add((caller, "http"))
            if caller != "gateway" and re.search(r"[\"']GATEWAY_INTERNAL_URL[\"']", text):
                calls["gateway"].add((caller, "internal"))
    return calls


def allowed_peers(overlay: str, target: str) -> set[tuple[str, str | int]]:
    """(peer, port) pairs let in to the pods of Deployment `target`: 'pod:<name>' or 'namespace:<name>'."""
    labels = pod_labels(objects(overlay, "Deployment")[target])
    allowed: set[tuple[str, str | int]] = set()
    policies = [p for p in objects(overlay, "NetworkPolicy").values() if selects(p["spec"]["podSelector"], labels)]
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies), "default deny"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from") and rule.get("ports"), "a rule without peers or ports opens everything"
            for peer in rule["from"]:
                assert len(peer) == 1, "one selector per peer (a pod and namespace pair is read differently)"
                if "podSelector" in peer:
                    names = {n for n, d in objects(overlay, "Deployment").items()
                             if selects(peer["podSelector"], pod_labels(d))}
                    assert names, f"{policy['metadata']['name']} admits pods no Deployment has"
                    peers = {f"pod:{n}" for n in names}
                else:
                    peers = {f"namespace:{peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"}
                allowed |= {(p, port["port"]) for p in peers for port in rule["ports"]}
    return allowed


def test_only_the_ingress_controller_reaches_the_edge_and_only_the_edge_the_gateway() -> None:
    assert allowed_peers("production", "edge") == {(f"namespace:{INGRESS_NAMESPACE}", "https")}
    internal = {(f"pod:{caller}", port) for caller, port in callers_in_code()["gateway"]}
    assert {port for _, port in internal} <= {"internal"}, "services reach the gateway's internal listener only"
    assert allowed_peers("production", "gateway") == {("pod:edge", "http"),
                                                      (f"namespace:{MONITORING_NAMESPACE}", "internal"), *internal}


def test_gateway_trusts_forwarded_addresses_of_a_network_only_the_edge_can_connect_from() -> None:
    gateway = container(objects("production", "Deployment")["gateway"])
    ipaddress.ip_network(env_of(gateway)["TRUSTED_PROXIES"]["value"])  # the pod CIDR, a real network
    assert {peer for peer, port in allowed_peers("production", "gateway") if port == "http"} == {"pod:edge"}


@pytest.mark.parametrize("service", sorted(set(PACKAGES) - {"gateway"}))
def test_services_are_reached_by_the_gateway_and_the_services_whose_code_calls_them(service: str) -> None:
    callers = callers_in_code()[service]
    assert ("gateway", "http") in callers
    assert allowed_peers("production", service) == {(f"pod:{c}", port) for c, port in callers}


def test_who_calls_which_internal_endpoint_is_what_the_policies_were_written_from() -> None:
    """The table the policies' comments state, held to the code (a new caller shows up here first)."""
    def http(*callers: str) -> set[tuple[str, str]]:
        return {(c, "http") for c in callers}

    assert callers_in_code() == {
        "gateway": {("audit", "internal")},  # the compliance controls on the internal listener
        "auth": http("gateway", "keydir", "audit", "push"),  # JWKS, /internal/v1/revocations, controls
        "keydir": http("gateway", "auth", "audit"),  # /internal/v1/keys/{user}/revoke-all, controls
        "audit": http("gateway", "auth", "keydir", "push"),  # /internal/v1/audit/events and /phi-key
        "push": http("gateway", "audit"),  # the compliance controls
    }


@pytest.mark.parametrize("service", sorted({"edge", *PACKAGES}))
def test_each_service_deploys_alone_with_the_default_deny(service: str) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(service)}
    assert {("Deployment", service), ("Service", service), ("HorizontalPodAutoscaler", service),
            ("PodDisruptionBudget", service), ("NetworkPolicy", "default-deny-ingress")} <= kinds
    assert {n for k, n in kinds if k == "Deployment"} == {service}
    production = {(o["kind"], o["metadata"]["name"]): o for o in render("production")}
    for obj in render(service):  # the same objects as in the whole stack: one source for both
        assert production[(obj["kind"], obj["metadata"]["name"])] == obj
