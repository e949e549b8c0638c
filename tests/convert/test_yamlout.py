"""The converter's YAML writer: what it writes reads back as the same value, with the
comments where they were put."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from eventsvc.convert import yamlout

TRICKY: list[Any] = ["on", "yes", "null", "~", "1.0", "0x1f", "08:00:00", "20:00:00", "-x",
                     "- x", "a: b", "#c", "{{ data.x }}", "x {{ data.y }}", "'q'", '"d"', "",
                     " padded ", "multi\nline\n", "trailing  \nspaces", "@at", "`tick", "%p",
                     "*star", "&amp", "!bang", "|pipe", ">gt", "?q", "2026-12-24", "ünï", 1, 1.5,
                     True, None, [], {}]  # fmt: skip


@pytest.mark.parametrize("value", TRICKY)
def test_scalars_read_back_unchanged(value: Any) -> None:
    doc = {"k": value, "list": [value, {"in": value}], "on": {value if isinstance(value, str)
                                                              and value else "x": 1}}
    assert yaml.safe_load(yamlout.dump(doc)) == doc


def test_comments_go_where_they_were_put() -> None:
    doc = {"spec": {"triggers": [{"template": {"name": "a"}}, {"template": {"name": "b"}}]}}
    text = yamlout.dump(doc, {(): ["head"], ("spec", "triggers", 1): ["before b"],
                              ("spec", "gone"): ["left out"]})  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "# head"
    at = lines.index("    # before b")
    assert lines[at + 1 : at + 3] == ["    - template:", "        name: b"]
    assert lines[-1] == "  # left out"  # a key that is not in the output: end of its parent
    assert yaml.safe_load(text) == doc
