"""In production, the HTTP port (intake, /metrics, /readyz) is reachable only from the
ingress controller and the monitoring namespace, not from every pod of the cluster."""

from __future__ import annotations

from tests.deploy.conftest import one, overlay


def _sources(policy: dict) -> list[dict]:
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 12000, "protocol": "TCP"}]
    return list(rule["from"])


def _namespaces(sources: list[dict]) -> set[str]:
    names = set()
    for source in sources:
        assert set(source) == {"namespaceSelector"}, source  # no ipBlock, no bare podSelector
        names.add(source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    return names


def test_production_admits_the_ingress_controller_and_monitoring_only() -> None:
    rendered = overlay("production")
    gateway = one(rendered, "NetworkPolicy", "eventsvc-gateway")
    sensors = one(rendered, "NetworkPolicy", "eventsvc-sensors")
    assert _namespaces(_sources(gateway)) == {"ingress-nginx", "monitoring"}
    assert _namespaces(_sources(sensors)) == {"monitoring"}
    # the patch replaced the ingress rules and kept the egress ones
    assert gateway["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert any(4222 in [p["port"] for p in r["ports"]] for r in gateway["spec"]["egress"])
