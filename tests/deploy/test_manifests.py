"""deploy/ renders with kubectl kustomize, validates against the Kubernetes schemas,
and holds what running eventsvc safely in a cluster needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from eventsvc import loader
from eventsvc.config import SETTINGS, load_config
from tests.deploy.conftest import (
    KUBERNETES_VERSION,
    OVERLAYS,
    ROOT,
    Obj,
    conf_value,
    containers,
    find,
    one,
    overlay,
    render,
    selects,
    size_bytes,
)
from tests.deploy.test_sensor_configmap import ConfigMapVolume

# kinds whose schemas are not Kubernetes' own: checked field by field in test_custom_resources.py
CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("argoproj.io/v1alpha1", "Application")}
HTTP_PORT = 12000


@pytest.mark.parametrize("path", ["base", *(f"overlays/{o}" for o in OVERLAYS), "argocd"])
def test_every_kustomization_renders(path: str) -> None:
    assert render(path)


def test_builtin_objects_validate_strictly(rendered: tuple[Obj, ...]) -> None:
    problems = []
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(map(str, e.path))
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {e.message}")
    assert not problems, "\n".join(problems)


def test_only_known_custom_resources(rendered: tuple[Obj, ...]) -> None:
    """Every object is either validated by schema or by the custom resource checks."""
    for obj in rendered:
        group = obj["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):
            assert (obj["apiVersion"], obj["kind"]) in CUSTOM, f"unchecked kind {obj['kind']}"


def test_deployments_split_by_component(rendered: tuple[Obj, ...]) -> None:
    gateway = one(rendered, "Deployment", "eventsvc-gateway")
    sensors = one(rendered, "Deployment", "eventsvc-sensors")
    args = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"]
            for d in (gateway, sensors)}  # fmt: skip
    assert args["eventsvc-gateway"] == ["run", "--components", "gateway"]
    assert args["eventsvc-sensors"] == ["run", "--components", "sensors,cron,watch"]
    assert sensors["spec"]["replicas"] >= 2
    # the autoscaler owns the gateway's replica count (Argo CD would reset a fixed one)
    assert "replicas" not in gateway["spec"]
    hpa = one(rendered, "HorizontalPodAutoscaler", "eventsvc-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "eventsvc-gateway"
    }  # fmt: skip
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_pods_are_locked_down(rendered: tuple[Obj, ...]) -> None:
    for dep, c in containers(rendered):
        pod = dep["spec"]["template"]["spec"]
        name = f"{dep['metadata']['name']}/{c['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) >= {"cpu", "memory"}, f"{name}: {kind}"


def test_writable_paths_are_empty_dirs(
    rendered: tuple[Obj, ...], overlay_config: Callable[[tuple[Obj, ...]], Path]
) -> None:
    """The root filesystem is read-only: /tmp (git clones, HOME) and the data dir are not."""
    config = load_config(overlay_config(rendered), environ={})
    for dep, c in containers(rendered):
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        for path in ("/tmp", config.data_dir):
            assert "emptyDir" in mounts[path], f"{dep['metadata']['name']}: {path}"
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["HOME"] == "/tmp"


def test_probes_and_port(rendered: tuple[Obj, ...]) -> None:
    for dep, c in containers(rendered):
        name = dep["metadata"]["name"]
        assert c["ports"] == [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, name
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz", name


def test_termination_outlasts_the_drain(
    rendered: tuple[Obj, ...], overlay_config: Callable[[tuple[Obj, ...]], Path]
) -> None:
    config = load_config(overlay_config(rendered), environ={})
    for dep, c in containers(rendered):
        pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        budget = float(pre_stop[1]) + config.shutdown_grace + config.drain_timeout
        assert grace > budget, (
            f"{dep['metadata']['name']}: terminationGracePeriodSeconds {grace} must exceed "
            f"preStop {pre_stop[1]}s + http.shutdownGrace {config.shutdown_grace:g}s + "
            f"drainTimeout {config.drain_timeout:g}s"
        )


def _leaves(tree: object, prefix: str = "") -> list[str]:
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in _leaves(v, f"{prefix}{key}.")]
    return [prefix[:-1]]


@pytest.mark.parametrize(("name", "replicas"), [("dev", 1), ("production", 3)])
def test_config_map_is_valid_config(
    name: str, replicas: int, overlay_config: Callable[[tuple[Obj, ...]], Path]
) -> None:
    objs = overlay(name)
    path = overlay_config(objs)
    unknown = set(_leaves(yaml.safe_load(path.read_text()))) - {s.key for s in SETTINGS}
    assert not unknown, f"keys eventsvc does not know (typos?): {sorted(unknown)}"
    config = load_config(path, environ={})
    assert config.stream_replicas == replicas
    assert config.nats_url and config.nats_user == "eventsvc"
    assert config.http_port == HTTP_PORT
    assert config.sensors_dir == "/etc/eventsvc/sensors"
    for _, c in containers(objs):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["EVENTSVC_CONFIG"] == "/etc/eventsvc/config/eventsvc.yaml"
        assert any(m["mountPath"] == "/etc/eventsvc/config" for m in c["volumeMounts"])


def test_body_limit_fits_nats_max_payload(
    rendered: tuple[Obj, ...], overlay_config: Callable[[tuple[Obj, ...]], Path]
) -> None:
    config = load_config(overlay_config(rendered), environ={})
    assert config.max_body_bytes <= size_bytes(conf_value("max_payload"))


def test_secrets_are_referenced_never_inlined(rendered: tuple[Obj, ...]) -> None:
    assert not find(rendered, "Secret"), "Secrets are created by the operator, not shipped"
    for dep, c in containers(rendered):
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        secret_dirs = {m["mountPath"] for m in c["volumeMounts"] if "secret" in volumes[m["name"]]}
        for env in c["env"]:
            name = env["name"]
            if name.endswith("_FILE"):
                assert os.path.dirname(env["value"]) in secret_dirs, f"{name} not in a Secret"
            else:
                assert not any(w in name for w in ("SECRET", "PASSWORD", "TOKEN", "KEY")), (
                    f"{dep['metadata']['name']}: {name} looks like an inlined secret; "
                    f"mount a Secret and use {name}_FILE"
                )
    gateway = one(rendered, "Deployment", "eventsvc-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE" in env
    assert "EVENTSVC_NATS_PASSWORD_FILE" in env


def test_pods_listen_on_every_interface(
    rendered: tuple[Obj, ...], overlay_config: Callable[[tuple[Obj, ...]], Path]
) -> None:
    """eventsvc listens on loopback by default: the pods say 0.0.0.0, or the kubelet's
    probes, the Service and Prometheus would find nothing on the pod's address."""
    assert load_config(overlay_config(rendered), environ={}).http_host == "0.0.0.0"
    for dep, c in containers(rendered):
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert "EVENTSVC_HTTP_HOST" not in env, dep["metadata"]["name"]  # one place: the config
        assert "--host" not in c["args"], dep["metadata"]["name"]


def test_gateway_reads_events_tokens_from_an_optional_secret(rendered: tuple[Obj, ...]) -> None:
    """Bound to 0.0.0.0, POST /events needs a token: the gateway reads them from the Secret
    eventsvc-events-token (key `tokens`). Optional: without it the pods start (GitHub
    webhooks keep working) and /events answers 401."""
    gateway = one(rendered, "Deployment", "eventsvc-gateway")
    pod = gateway["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = env["EVENTSVC_EVENTS_TOKEN_FILE"]
    assert "EVENTSVC_EVENTS_TOKEN" not in env  # never inlined
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == os.path.dirname(path)]
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "eventsvc-events-token"
    assert secret["optional"] is True
    assert secret["items"] == [{"key": "tokens", "path": os.path.basename(path)}]
    # only the gateway serves /events: the sensors pods do not get the tokens
    sensors = one(rendered, "Deployment", "eventsvc-sensors")
    for c in sensors["spec"]["template"]["spec"]["containers"]:
        assert not any(e["name"].startswith("EVENTSVC_EVENTS_TOKEN") for e in c["env"])


def test_sensors_configmap_holds_every_sensor_file(rendered: tuple[Obj, ...]) -> None:
    cm = one(rendered, "ConfigMap", "eventsvc-sensors")
    on_disk = {p.name for p in (ROOT / "sensors").iterdir() if p.suffix in (".yaml", ".yml")}
    assert set(cm["data"]) == on_disk, (
        "sensors/Kustomization must list every sensor file: "
        f"missing {sorted(on_disk - set(cm['data']))}"
    )
    dep = one(rendered, "Deployment", "eventsvc-sensors")
    pod = dep["spec"]["template"]["spec"]
    volume = next(
        v for v in pod["volumes"] if v.get("configMap", {}).get("name") == cm["metadata"]["name"]
    )
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    # a subPath mount would never see updates, and the hot reload would see nothing
    assert mount["mountPath"] == "/etc/eventsvc/sensors" and "subPath" not in mount


def test_sensors_load_from_a_configmap_volume(rendered: tuple[Obj, ...], tmp_path: Path) -> None:
    """The shipped sensors, mounted as the kubelet mounts the ConfigMap, load once each."""
    cm = one(rendered, "ConfigMap", "eventsvc-sensors")
    ConfigMapVolume(tmp_path).write(cm["data"])
    loaded = loader.load_paths([tmp_path])
    assert not loaded.problems, "\n".join(map(str, loaded.problems))
    # a file may hold several Sensor documents (sensors/promotion.yaml does)
    declared = [d for text in cm["data"].values() for d in yaml.safe_load_all(text)
                if isinstance(d, dict) and d.get("kind") == "Sensor"]  # fmt: skip
    assert len(loaded.sensors) == len(declared)


def test_ingress_exposes_only_intake(rendered: tuple[Obj, ...]) -> None:
    ing = one(rendered, "Ingress", "eventsvc-gateway")
    svc = one(rendered, "Service", "eventsvc-gateway")
    paths = [p for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]]
    assert sorted(p["path"] for p in paths) == ["/events", "/webhooks/github"]
    for p in paths:
        assert p["pathType"] == "Exact"
        assert p["backend"]["service"] == {"name": "eventsvc-gateway", "port": {"name": "http"}}
    assert svc["spec"]["ports"][0]["targetPort"] == "http"


def test_selectors_match_their_pods(rendered: tuple[Obj, ...]) -> None:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in find(rendered, "Deployment")}  # fmt: skip
    for dep in find(rendered, "Deployment"):
        assert selects(dep["spec"]["selector"]["matchLabels"], pods[dep["metadata"]["name"]])
    selectors: list[tuple[str, Callable[[Obj], dict[str, str]]]] = [
        ("Service", lambda o: o["spec"]["selector"]),
        ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
        ("NetworkPolicy", lambda o: o["spec"]["podSelector"]["matchLabels"]),
    ]
    for kind, get in selectors:
        for obj in find(rendered, kind):
            matched = [n for n, labels in pods.items() if selects(get(obj), labels)]
            assert matched == [obj["metadata"]["name"]], f"{kind}/{obj['metadata']['name']}"
    for pdb in find(rendered, "PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1


def _ports(rules: list[Obj]) -> set[tuple[int, str]]:
    return {(p["port"], p["protocol"]) for r in rules for p in r["ports"]}


def test_network_policy(rendered: tuple[Obj, ...]) -> None:
    gateway = one(rendered, "NetworkPolicy", "eventsvc-gateway")["spec"]
    sensors = one(rendered, "NetworkPolicy", "eventsvc-sensors")["spec"]
    dns = {(53, "UDP"), (53, "TCP")}
    for spec in (gateway, sensors):
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert _ports(spec["ingress"]) == {(HTTP_PORT, "TCP")}
        nats = next(r for r in spec["egress"] if (4222, "TCP") in _ports([r]))
        assert nats["to"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "nats"
        }  # fmt: skip
    # the gateway needs only NATS and DNS; the triggers add the Kubernetes API and GitHub
    assert _ports(gateway["egress"]) == {(4222, "TCP"), *dns}
    assert _ports(sensors["egress"]) == {(4222, "TCP"), (443, "TCP"), (6443, "TCP"), *dns}


def test_images_are_set_by_the_overlay(rendered: tuple[Obj, ...]) -> None:
    for _, c in containers(rendered):
        name, _, tag = c["image"].rpartition(":")
        assert "/" in name and tag and tag != "latest", c["image"]


def test_namespace_meets_restricted_pod_security(rendered: tuple[Obj, ...]) -> None:
    (ns,) = find(rendered, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in rendered:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in ("Role", "RoleBinding"):
            assert namespace in ("argocd", "argo")  # Argo CD's and Argo Workflows' own
        elif obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert namespace == ns["metadata"]["name"], f"{obj['kind']}/{obj['metadata']['name']}"
