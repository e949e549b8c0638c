"""The web console and its API stay inside the cluster: no Ingress of any overlay routes
/ui or /api (reach them with `kubectl port-forward`, or an Ingress of your own behind
authentication, with EVENTSVC_UI_TOKEN set)."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import OVERLAYS, find, overlay


@pytest.mark.parametrize("name", OVERLAYS)
def test_no_ingress_exposes_the_console(name: str) -> None:
    ingresses = find(overlay(name), "Ingress")
    assert ingresses, f"overlay {name} has no Ingress to check"
    for ing in ingresses:
        for rule in ing["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                path = p["path"]
                assert p["pathType"] == "Exact", f"{name}: {path} is a prefix"
                assert path not in ("/", "") and not path.startswith(("/ui", "/api")), (
                    f"overlay {name} exposes {path} through Ingress "
                    f"{ing['metadata']['name']}"
                )
        assert "defaultBackend" not in ing["spec"], f"{name}: a default backend exposes all"
