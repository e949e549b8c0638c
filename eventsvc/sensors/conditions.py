"""`conditions`: boolean expressions over dependency names, e.g. `(build && approved) || hotfix`.

Parsed once into a small tree; evaluated against the set of satisfied dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Set

Condition = Callable[[Set[str]], bool]
_TOKEN = re.compile(r"\s*(?:(&&|\|\||!|\(|\))|([A-Za-z_][A-Za-z0-9_\-]*))")


class ConditionSyntaxError(ValueError):
    pass


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConditionSyntaxError(
                f"unexpected {text[pos:].strip()[:10]!r} at column {pos + 1}; "
                "use dependency names with &&, ||, ! and parentheses"
            )
        out.append(m.group(1) or m.group(2))
        pos = m.end()
    return out


def _either(a: Condition, b: Condition) -> Condition:
    return lambda s: a(s) or b(s)


def _both(a: Condition, b: Condition) -> Condition:
    return lambda s: a(s) and b(s)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.names: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ConditionSyntaxError("expression ends too early")
        self.pos += 1
        return tok

    def parse_or(self) -> Condition:
        left = self.parse_and()
        while self.peek() == "||":
            self.take()
            left = _either(left, self.parse_and())
        return left

    def parse_and(self) -> Condition:
        left = self.parse_not()
        while self.peek() == "&&":
            self.take()
            left = _both(left, self.parse_not())
        return left

    def parse_not(self) -> Condition:
        if self.peek() == "!":
            self.take()
            inner = self.parse_not()
            return lambda s: not inner(s)
        return self.parse_atom()

    def parse_atom(self) -> Condition:
        tok = self.take()
        if tok == "(":
            inner = self.parse_or()
            if self.take() != ")":
                raise ConditionSyntaxError("missing ')'")
            return inner
        if tok in ("&&", "||", ")"):
            raise ConditionSyntaxError(f"unexpected {tok!r}; expected a dependency name")
        self.names.add(tok)
        return lambda s: tok in s


def parse(text: str) -> tuple[Condition, frozenset[str]]:
    """The compiled condition and the dependency names it mentions."""
    parser = _Parser(_tokens(text))
    if not parser.tokens:
        raise ConditionSyntaxError("empty expression")
    cond = parser.parse_or()
    if parser.peek() is not None:
        raise ConditionSyntaxError(f"unexpected {parser.peek()!r} after a complete expression")
    return cond, frozenset(parser.names)


def all_of(names: Set[str]) -> Condition:
    required = frozenset(names)
    return lambda s: required <= s
