"""Watch specs and the pure logic of the watch gateway: no server, no bus."""

from __future__ import annotations

from pathlib import Path

from eventsvc import loader, watches, yamldoc
from eventsvc.watches import Change

GOOD = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Watch
metadata: {name: argocd-apps}
spec:
  group: argoproj.io
  version: v1alpha1
  resource: applications
  namespace: argocd
  labelSelector: eventsvc.dev/managed=true
  fields: [status.health.status, status.sync.status, status.sync.revision]
"""


def parse(text: str) -> tuple[watches.Watch | None, list[str]]:
    docs, _ = yamldoc.parse_documents(text, "w.yaml")
    watch, problems = watches.parse_watch(docs[0])
    return watch, [str(p) for p in problems]


def test_a_watch_parses() -> None:
    watch, problems = parse(GOOD)
    assert problems == []
    assert watch is not None
    assert watch.api_version == "argoproj.io/v1alpha1"
    assert (watch.namespace, watch.label_selector) == ("argocd", "eventsvc.dev/managed=true")
    assert watch.fields == ("status.health.status", "status.sync.status", "status.sync.revision")


def test_a_typo_is_reported_with_file_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("labelSelector:", "lableSelector:").replace(
        "status.sync.status,", "stauts.sync.status,"
    )
    (tmp_path / "w.yaml").write_text(text)
    loaded = loader.load_paths([tmp_path])
    found = [str(p) for p in loaded.problems]
    where = tmp_path / "w.yaml"
    assert any(p.startswith(f"{where}:9: spec") and "labelSelector" in p for p in found), found
    assert f"{where}:10: spec.fields[1]: 'stauts.sync.status' starts with 'stauts'; did you " \
        "mean 'status'?" in found  # fmt: skip
    assert "Watch" not in loaded.by_kind


def test_required_fields_and_shapes() -> None:
    _, problems = parse(GOOD.replace("  resource: applications\n", "").replace(
        "version: v1alpha1", "version: alpha"))  # fmt: skip
    assert any(":6: spec.version:" in p for p in problems), problems
    assert any("resource" in p and "required" in p for p in problems), problems


def test_field_values_read_dotted_paths() -> None:
    obj = {"status": {"health": {"status": "Healthy"}, "conditions": [{"type": "A"}]}}
    assert watches.field_value(obj, "status.health.status") == "Healthy"
    assert watches.field_value(obj, "status.conditions.0.type") == "A"
    assert watches.field_value(obj, "status.sync.status") is None


def test_changes_and_classify() -> None:
    old = {"a": "Progressing", "b": "Synced"}
    new = {"a": "Healthy", "b": "Synced"}
    assert watches.changes(old, new) == {"a": {"from": "Progressing", "to": "Healthy"}}
    assert watches.classify(old, new) is Change.CHANGED
    assert watches.classify(old, dict(old)) is None  # a heartbeat
    assert watches.classify(None, new) is Change.ADDED
    assert watches.classify(old, None) is Change.DELETED
    assert watches.changes(old, None) == {
        "a": {"from": "Progressing", "to": None}, "b": {"from": "Synced", "to": None}}  # fmt: skip


def test_fingerprint_is_stable_and_order_free() -> None:
    assert watches.fingerprint({"a": 1, "b": [1]}) == watches.fingerprint({"b": [1], "a": 1})
    assert watches.fingerprint({"a": 1}) != watches.fingerprint({"a": 2})


def test_versions_backoff_and_ids() -> None:
    assert watches.newer("105", "104") and watches.newer("105", None)
    assert not watches.newer("99", "105")
    assert [watches.backoff(n, base=0.5, cap=4) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    assert watches.event_id("apps", "u-1", "42") == "apps:u-1:42"
