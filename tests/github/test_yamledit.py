"""Round-trip YAML edits: only the edited value changes; comments, order, quotes stay."""

from __future__ import annotations

import difflib

import pytest

from eventsvc.github.yamledit import EditError, YamlDoc

KUSTOMIZATION = """\
# staging overlay: bumped by promotion PRs
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base   # the shared manifests
images:
  - name: ghcr.io/acme/shop
    newTag: "1.4.0"  # keep quoted
  - name: ghcr.io/acme/worker
    newTag: 2.0.1
namePrefix: staging-
"""

VALUES = """\
replicaCount: 2
image:
    repository: ghcr.io/acme/shop   # registry
    tag: 1.4.0
# trailing comment
"""


def _diff(a: str, b: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]  # fmt: skip


def test_image_tag_bump_changes_one_line() -> None:
    doc = YamlDoc(KUSTOMIZATION, "kustomization.yaml")
    changes = doc.set_image("ghcr.io/acme/shop", new_tag="1.5.0")
    assert [str(c) for c in changes] == [
        "kustomization.yaml: images[ghcr.io/acme/shop].newTag: 1.4.0 -> 1.5.0"
    ]
    assert _diff(KUSTOMIZATION, doc.dump()) == [
        '-    newTag: "1.4.0"  # keep quoted',
        '+    newTag: "1.5.0"  # keep quoted',
    ]


def test_same_value_is_no_change_and_text_untouched() -> None:
    doc = YamlDoc(KUSTOMIZATION)
    assert doc.set_image("ghcr.io/acme/worker", new_tag="2.0.1") == []
    assert doc.dump() is KUSTOMIZATION


def test_new_image_entry_and_digest() -> None:
    doc = YamlDoc(KUSTOMIZATION)
    doc.set_image("ghcr.io/acme/api", new_tag="0.1.0", digest="sha256:abc")
    out = doc.dump()
    assert "  - name: ghcr.io/acme/api\n    newTag: 0.1.0\n    digest: sha256:abc\n" in out
    assert out.startswith("# staging overlay")
    assert "  - ../../base   # the shared manifests" in out


def test_tag_bump_drops_old_digest() -> None:
    text = "images:\n- name: app\n  digest: sha256:old\n"
    doc = YamlDoc(text)
    doc.set_image("app", new_tag="v2")
    assert doc.dump() == "images:\n- name: app\n  newTag: v2\n"


def test_set_path_keeps_four_space_indent_and_comments() -> None:
    doc = YamlDoc(VALUES, "values.yaml")
    doc.set_path("image.tag", "1.5.0")
    assert _diff(VALUES, doc.dump()) == ["-    tag: 1.4.0", "+    tag: 1.5.0"]


def test_set_path_creates_missing_mappings_and_indexes_lists() -> None:
    doc = YamlDoc("a:\n  items:\n  - x: 1\n")
    doc.set_path("a.items[0].x", 2)
    doc.set_path("b.c", "new")
    assert doc.dump() == "a:\n  items:\n  - x: 2\nb:\n  c: new\n"


def test_numeric_looking_tag_stays_a_string() -> None:
    doc = YamlDoc("image:\n  tag: '1.0'\n")
    doc.set_path("image.tag", "1.10")
    assert doc.dump() == "image:\n  tag: '1.10'\n"
    plain = YamlDoc("image:\n  tag: v1\n")
    plain.set_path("image.tag", "2.0")
    assert plain.dump() == "image:\n  tag: '2.0'\n"


def test_bad_path_names_the_file() -> None:
    doc = YamlDoc("a: 1\n", "values.yaml")
    with pytest.raises(EditError, match=r"values.yaml: a.b: a is a int, not a mapping"):
        doc.set_path("a.b", 1)
