"""Custom resources have no schema here: check the fields their controllers require
(Argo CD Applications, Prometheus Operator ServiceMonitors), and that the NATS
Application's Helm values give the cluster deploy/nats/nats-server.conf describes."""

from __future__ import annotations

import re

from tests.deploy.conftest import (
    DEPLOY,
    NATS_CONF,
    ROOT,
    Obj,
    conf_value,
    find,
    one,
    overlay,
    render,
    selects,
    size_bytes,
)

SEMVER = re.compile(r"\d+\.\d+\.\d+")


def _check_application(app: Obj) -> None:
    name = app["metadata"]["name"]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["metadata"]["namespace"] == "argocd", f"{name}: Argo CD reads its own namespace"
    spec = app["spec"]
    assert spec["project"], name
    dest = spec["destination"]
    assert ("server" in dest) != ("name" in dest), f"{name}: destination needs server or name"
    assert dest["namespace"], name
    source = spec["source"]
    assert source["repoURL"] and source["targetRevision"], name
    assert ("path" in source) != ("chart" in source), f"{name}: source is a path or a chart"
    automated = spec.get("syncPolicy", {}).get("automated")
    assert automated is None or set(automated) <= {"prune", "selfHeal", "allowEmpty"}, name


def test_applications_have_what_argo_cd_requires() -> None:
    apps = find(render("argocd"), "Application")
    assert {a["metadata"]["name"] for a in apps} == {"eventsvc", "nats"}
    for app in apps:
        _check_application(app)


def test_eventsvc_application_installs_the_production_overlay() -> None:
    app = one(render("argocd"), "Application", "eventsvc")
    source = app["spec"]["source"]
    path = source["path"]
    assert (ROOT / path / "kustomization.yaml").is_file()
    objs = render(path.removeprefix("deploy/"))
    (ns,) = find(objs, "Namespace")
    assert app["spec"]["destination"]["namespace"] == ns["metadata"]["name"]
    assert source["repoURL"].endswith(".git")


def test_nats_application_pins_the_official_chart() -> None:
    source = one(render("argocd"), "Application", "nats")["spec"]["source"]
    assert source["repoURL"] == "https://nats-io.github.io/k8s/helm/charts/"
    assert source["chart"] == "nats"
    assert SEMVER.fullmatch(source["targetRevision"]), "pin an exact chart version"


def test_nats_values_match_the_server_conf() -> None:
    app = one(render("argocd"), "Application", "nats")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    config = values["config"]
    conf = NATS_CONF.read_text()
    routes = re.findall(r"^\s*nats://\S+:6222\s*$", conf, re.MULTILINE)
    assert config["cluster"] == {"enabled": True, "replicas": 3} and len(routes) == 3
    js = config["jetstream"]
    assert js["enabled"] and js["fileStore"]["enabled"] and js["fileStore"]["pvc"]["enabled"]
    assert size_bytes(js["fileStore"]["maxSize"]) == size_bytes(conf_value("max_file_store"))
    assert size_bytes(js["memoryStore"]["maxSize"]) == size_bytes(conf_value("max_memory_store"))
    assert size_bytes(js["fileStore"]["pvc"]["size"]) > size_bytes(js["fileStore"]["maxSize"])
    merge = config["merge"]
    assert size_bytes(merge["max_payload"]) == size_bytes(conf_value("max_payload"))
    for key in ("lame_duck_duration", "lame_duck_grace_period", "system_account"):
        assert str(merge[key]) == conf_value(key), key
    account = merge["accounts"]["EVENTSVC"]
    assert account["users"] == [
        {"user": "eventsvc", "password": "<< $EVENTSVC_NATS_PASSWORD >>"},
        {"user": "ci", "password": "<< $NATS_CI_PASSWORD >>",
         "permissions": {"publish": {"allow": ["events.ci.>"]},
                         "subscribe": {"allow": ["_INBOX_ci.>"]}}},
    ]  # the same users and permissions as deploy/nats/nats-server.conf
    for key in ("max_memory", "max_file"):
        assert size_bytes(account["jetstream"][key]) == size_bytes(conf_value(key))
    for key in ("max_streams", "max_consumers"):
        assert account["jetstream"][key] == int(conf_value(key))
    # every variable the merged config reads comes from a Secret
    env = values["container"]["env"]
    for var in set(re.findall(r"\$([A-Z_]+)", str(merge))):
        assert "secretKeyRef" in env[var]["valueFrom"], var


def test_eventsvc_reaches_the_nats_release() -> None:
    app = one(render("argocd"), "Application", "nats")
    release = app["spec"]["source"]["helm"]["releaseName"]
    namespace = app["spec"]["destination"]["namespace"]
    config = (DEPLOY / "base" / "eventsvc.yaml").read_text()
    assert f"nats://{release}.{namespace}.svc.cluster.local:4222" in config


def test_servicemonitor_scrapes_every_pod() -> None:
    objs = overlay("production")
    (sm,) = find(objs, "ServiceMonitor")
    spec = sm["spec"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selector = spec["selector"]["matchLabels"]
    services = [s for s in find(objs, "Service") if selects(selector, s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in services} == {"eventsvc-gateway", "eventsvc-sensors"}
    for endpoint in spec["endpoints"]:
        assert endpoint["path"] == "/metrics"
        for svc in services:
            assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert not find(overlay("dev"), "ServiceMonitor"), "the component is optional"
