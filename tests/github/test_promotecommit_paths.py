"""Edits carried in a promotion commit's trailer are data read back from the remote:
a path that is not a plain path inside the repository drops the trailer."""

from __future__ import annotations

import json

import pytest

from eventsvc.github.gitops import Blob
from eventsvc.github.promotecommit import Edit, plain_path, read_trailers


def commit(edits: list[dict[str, object]]) -> Blob:
    trailer = "Eventsvc-Promotion: " + json.dumps(edits)
    return Blob("commit", f"tree {'a' * 40}\n\nPromote\n\n{trailer}\n".encode())


@pytest.mark.parametrize("file", ["../x.yaml", "/etc/passwd", "a/../../x", "a//b", "./a", ".",
                                  "..", "a/\nb", ""])  # fmt: skip
def test_a_trailer_with_a_path_outside_the_repository_is_ignored(file: str) -> None:
    assert not plain_path(file)
    assert read_trailers(commit([{"file": file, "path": "a", "value": 1}])) == ([], None)


def test_plain_paths_are_read_back() -> None:
    edits, _ = read_trailers(commit([{"file": "overlays/staging/k.yaml", "path": "a",
                                      "value": 1}]))  # fmt: skip
    assert edits == [Edit("overlays/staging/k.yaml", None, "a", (("value", 1),))]
