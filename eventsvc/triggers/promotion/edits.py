"""This event's edits of a promotion: the value each one sets (written in the spec, read
from the event, or copied from a file on a branch) and applying them to the target's files."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents, promotecommit
from eventsvc.github.promotecommit import Edit, Snapshot, plain_path
from eventsvc.github.yamledit import Change, EditError, YamlDoc
from eventsvc.triggers.promotion.spec import CopyFrom, EditSpec, PromotionSpec, Source

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+([.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")


class Edits:
    """The edits of one run (`spec.edits`), resolved against its event and the repository."""

    def __init__(self, spec: PromotionSpec, event: CloudEvent) -> None:
        self.spec = spec
        self.event = event

    def copy_specs(self) -> list[tuple[str, str]]:
        """(branch, file) read by this event's copyFrom edits."""
        out = []
        for edit in self.spec.edits:
            if edit.copy_from is not None:
                src = edit.copy_from
                out.append((src.branch or self.spec.target, src.file or edit.file))
        return out

    def copy_branches(self) -> list[str]:
        return [b for b, _ in self.copy_specs() if b != self.spec.target]

    def copy_sources(self, remote: Mapping[str, str]) -> list[str]:
        return [f"{remote[b]}:{f}" for b, f in self.copy_specs() if b in remote]

    def resolve(self, snap: Snapshot, remote: Mapping[str, str]) -> list[Edit]:
        out = []
        for i, edit in enumerate(self.spec.edits):
            file = edit.file
            if not plain_path(file):
                raise PermanentTriggerError(
                    f"edits[{i}].file: {file!r} is not a plain path in the repository; "
                    "write it from the root, e.g. overlays/staging/kustomization.yaml"
                )
            kind = edit.kind
            if edit.copy_from is not None:
                values = self._copy(snap, remote, edit, edit.copy_from)
            else:
                values = tuple((s.field, self._value(s, i)) for s in edit.sources)
                if edit.image_from is not None:
                    values += self._image_ref(edit.image_from, edit.target, i)
            target = edit.target
            out.append(Edit(file, target if kind == "image" else None,
                            target if kind == "set" else None, values, self.spec.app))  # fmt: skip
        return out

    def _value(self, source: Source, index: int) -> Any:
        if source.path is None:
            return source.value
        field, path = source.field, source.path
        value = ghevents.event_value(self.event, path)
        if value is ghevents.MISSING or value is None or isinstance(value, Mapping | list):
            raise PermanentTriggerError(
                f"edits[{index}].{field}From: {path!r} is not a value in event "
                f"{self.event.get_id()} ({self.event.get_type()}); point it at a field of the "
                "event, e.g. data.release.tag_name"
            )
        return value

    def _image_ref(self, path: str, name: str, index: int) -> tuple[tuple[str, Any], ...]:
        """newTag and digest of the image reference for `name` at the event path imageFrom."""
        found = ghevents.event_value(self.event, path)
        refs = found if isinstance(found, list) else [found]
        where = f"edits[{index}].image.imageFrom: {path!r} in event {self.event.get_id()}"
        for ref in refs:
            if not isinstance(ref, str):
                continue
            parsed = split_image_ref(ref)
            if parsed is None or parsed[0] != name:
                continue
            _, tag, digest = parsed
            if (tag is not None and not _TAG.match(tag)) or (
                    digest is not None and not _DIGEST.match(digest)):  # fmt: skip
                raise PermanentTriggerError(f"{where}: {ref!r} is not a valid image reference")
            return tuple((k, v) for k, v in (("newTag", tag), ("digest", digest)) if v)
        raise PermanentTriggerError(
            f"{where}: no image reference to {name!r} with a tag or digest; point imageFrom at "
            f"a reference such as {name}:1.2.3 or a list holding one"
        )

    def _copy(
        self, snap: Snapshot, remote: Mapping[str, str], edit: EditSpec, src: CopyFrom
    ) -> tuple[tuple[str, Any], ...]:
        branch = src.branch or self.spec.target
        src_file = src.file or edit.file
        if branch not in remote:
            raise PermanentTriggerError(
                f"copyFrom: branch {branch!r} not found in {self.spec.url}; check copyFrom.branch"
            )
        text = snap.text(remote[branch], src_file)
        where = f"{src_file} on {branch!r}"
        if text is None:
            raise PermanentTriggerError(f"copyFrom: {where} does not exist; check copyFrom")
        doc = promotecommit.load_doc(text, src_file)
        if edit.kind == "image":
            name = src.name or edit.target
            entry = doc.image(name)
            if entry is None:
                raise PermanentTriggerError(f"copyFrom: {where} has no images[] entry {name!r}")
            return tuple((k, str(entry[k])) for k in ("newName", "newTag", "digest") if k in entry)
        path = src.path or edit.target
        value = doc.get(path)
        if value is None:
            raise PermanentTriggerError(f"copyFrom: {where} has no value at {path!r}")
        return (("value", value if isinstance(value, bool | int | float) else str(value)),)

    def apply(
        self, snap: Snapshot, target: str, edits: Sequence[Edit]
    ) -> tuple[dict[str, str], list[tuple[str, Change]]]:
        """Edited file texts by path, and every change made against the target (by app)."""
        docs: dict[str, YamlDoc] = {}
        all_changes: list[tuple[str, Change]] = []
        for edit in edits:
            if edit.file not in docs:
                text = snap.text(target, edit.file)
                if text is None:
                    raise PermanentTriggerError(
                        f"{edit.file} does not exist on {self.spec.target!r} in {self.spec.url}; "
                        "check the edit's file path"
                    )
                docs[edit.file] = promotecommit.load_doc(text, edit.file)
            try:
                made = edit.apply(docs[edit.file])
            except EditError as e:
                raise PermanentTriggerError(str(e)) from e
            all_changes += [(edit.app or "-", c) for c in made]
        dumped = {name: doc.dump() for name, doc in docs.items() if doc.changes}
        return {n: t for n, t in dumped.items() if t != docs[n].text}, all_changes


def split_image_ref(ref: str) -> tuple[str, str | None, str | None] | None:
    """(name, tag, digest) of `name[:tag][@digest]`; None when it names neither."""
    name, _, digest = ref.partition("@")
    tag = None
    head, sep, last = name.rpartition(":")
    if sep and "/" not in last:  # a colon in the last segment: a tag, not a registry port
        name, tag = head, last
    if not name or (tag is None and not digest):
        return None
    return name, tag, digest or None
