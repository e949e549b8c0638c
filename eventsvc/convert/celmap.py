"""Argo Events expressions into CEL: event paths, `exprs` (govaluate syntax) and Go templates.

A reference into an Argo event is first mapped by its event source (`body.x` -> the
event data, `header.X-GitHub-Event` -> an attribute, ...), then written as CEL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eventsvc import cel
from eventsvc.convert.report import NotConvertible

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CEL_RESERVED = frozenset({
    "as", "break", "const", "continue", "else", "false", "for", "function", "if", "import",
    "in", "let", "loop", "package", "namespace", "null", "return", "true", "var", "void",
    "while",
})  # fmt: skip
_GJSON_SPECIAL = re.compile(r"(?<!\\)[*?#|@!]")


@dataclass(frozen=True, slots=True)
class Ref:
    """Where a value is in an eventsvc event: `data` at `path` (() = all), or an attribute."""

    path: tuple[str, ...] = ()
    attribute: str | None = None

    def dotted(self) -> str:
        return ".".join(p.replace(".", "\\.") for p in self.path)

    def cel(self, root: str = "") -> str:
        """CEL for this value: `data.a[0]['b-c']`, `event.source`; `root` replaces `event`."""
        base = root or "event"
        if self.attribute is not None:
            return base + _member(self.attribute)
        out = (root + ".data") if root else "data"
        return out + "".join(_member(p) for p in self.path)




def _member(name: str) -> str:
    if name.isdigit():
        return f"[{name}]"
    if _IDENT.fullmatch(name) and name not in _CEL_RESERVED:
        return "." + name
    return f"[{cel_string(name)}]"


def cel_string(text: str) -> str:
    return json.dumps(text)


def split_gjson(path: str) -> tuple[str, ...]:
    """`a.b\\.c.0` -> ('a', 'b.c', '0'); wildcards, queries and modifiers are refused."""
    if not path or _GJSON_SPECIAL.search(path):
        raise NotConvertible(f"path {path!r} uses gjson wildcards, queries or modifiers; "
                             "write an eventsvc path ('*' fans out) or an expression")  # fmt: skip
    parts = tuple(p.replace("\0", ".") for p in path.replace("\\.", "\0").split("."))
    if any(p == "" for p in parts):
        raise NotConvertible(f"path {path!r} has an empty segment")
    return parts


# -- govaluate (`exprs[].expr`) ---------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!()+\-*/%,?:])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.\-]*)
)""", re.X)  # fmt: skip
_COMPARE = {"==", "!=", "<", "<=", ">", ">="}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise NotConvertible(f"cannot read {text[pos:].strip()[:20]!r} in expression "
                                 f"{text!r}")  # fmt: skip
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _literal_string(token: str) -> str:
    body = token[1:-1]
    if token[0] == "'":
        body = body.replace("\\'", "'")
        return cel_string(body.encode().decode("unicode_escape") if "\\" in body else body)
    return token


def expr_to_cel(text: str, fields: Mapping[str, str]) -> str:
    """An Argo `exprs[].expr` (govaluate) with its fields (name -> CEL) as CEL.

    Numbers compare as doubles, as in govaluate; `=~`/`!~` become `matches`;
    `x in ('a', 'b')` becomes `x in ['a', 'b']`.
    """
    toks = _tokens(text)
    words: list[tuple[str, str]] = []
    for kind, tok in toks:
        if kind == "ident":
            if tok in fields:
                words.append(("field", fields[tok]))
            elif tok in ("true", "false"):
                words.append(("lit", tok))
            elif tok == "nil":
                words.append(("lit", "null"))
            elif tok == "in":
                words.append(("op", "in"))
            else:
                raise NotConvertible(f"{tok!r} in {text!r} is neither a field of this "
                                     "expression nor a literal")  # fmt: skip
        elif kind == "str":
            words.append(("lit", _literal_string(tok)))
        elif kind == "num":
            words.append(("num", tok if any(c in tok for c in ".eE") else tok + ".0"))
        else:
            words.append(("op", tok))
    out = _join(_rewrite(words, text))
    try:
        cel.Program(out)
    except cel.CelSyntaxError:
        raise NotConvertible(f"{text!r} is not a complete expression") from None
    return out


def _rewrite(words: list[tuple[str, str]], text: str) -> list[str]:
    out: list[str] = []
    i = 0
    n = len(words)
    while i < n:
        kind, tok = words[i]
        nxt = words[i + 1] if i + 1 < n else ("", "")
        after = words[i + 2] if i + 2 < n else ("", "")
        if kind == "field" and nxt[1] in _COMPARE and after[0] == "num":
            out += [f"double({tok})", nxt[1], after[1]]
            i += 3
        elif kind == "num" and nxt[1] in _COMPARE and after[0] == "field":
            out += [tok, nxt[1], f"double({after[1]})"]
            i += 3
        elif kind in ("field", "lit") and nxt[1] in ("=~", "!~") and after[0] in ("field", "lit"):
            neg = "!" if nxt[1] == "!~" else ""
            out.append(f"{neg}string({tok}).matches({after[1]})")
            i += 3
        elif kind == "op" and tok == "in" and nxt[1] == "(":
            depth, j = 0, i + 1
            items: list[str] = []
            while j < n:
                if words[j][1] == "(":
                    depth += 1
                elif words[j][1] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                items.append(words[j][1] if words[j][1] != "(" or depth > 1 else "")
                j += 1
            out += ["in", "[" + _join([t for t in items if t]) + "]"]
            i = j + 1
        elif kind == "op" and tok in ("=~", "!~"):
            raise NotConvertible(f"{tok} in {text!r} needs a field or a string on each side")
        else:
            out.append(tok)
            i += 1
    return out


def _join(tokens: list[str]) -> str:
    text = ""
    for tok in tokens:
        if not text or text.endswith(("(", "[", "!")) or tok in (")", "]", ","):
            text += tok
        else:
            text += " " + tok
    return text.replace(" ,", ",")


# -- Go templates (dataTemplate, contextTemplate) -----------------------------------------

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_CONTROL = ("if", "else", "end", "range", "with", "define", "template", "block", "break",
            "continue")  # fmt: skip
_SPRIG_NONE = ("title", "b64enc", "b64dec", "sha256sum", "printf", "split", "regexFind",
               "regexReplaceAll", "quote", "squote", "now", "date", "repeat", "nospace",
               "abbrev", "cat", "indent", "nindent")  # fmt: skip


def _words(command: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\S+', command)]


def _pipes(action: str) -> list[str]:
    out, cur, quote = [], "", ""
    for ch in action:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
        elif ch in "\"`":
            quote = ch
            cur += ch
        elif ch == "|":
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def template_pieces(text: str, term: Callable[[str], str]) -> list[str | tuple[str]]:
    """A Go template as literal text and `(cel,)` pieces; `term` maps `.Input...` to CEL."""
    out: list[str | tuple[str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        if m.start() > pos:
            out.append(text[pos : m.start()])
        out.append((_action(m.group(1), term),))
        pos = m.end()
    if pos < len(text):
        out.append(text[pos:])
    return out


def _action(action: str, term: Callable[[str], str]) -> str:
    first = action.split(None, 1)[0] if action.strip() else ""
    if first in _CONTROL or ":=" in action or first.startswith("$") or first.startswith("/*"):
        raise NotConvertible(f"template action {{{{ {action} }}}}: control structures and "
                             "variables have no counterpart; write a CEL expression")  # fmt: skip
    value: str | None = None
    for command in _pipes(action):
        words = _words(command)
        if not words:
            raise NotConvertible(f"empty command in {{{{ {action} }}}}")
        args = [_arg(w, term) for w in words[1:]] + ([value] if value is not None else [])
        if words[0].startswith((".", '"', "`")) or words[0][0].isdigit():
            if args:
                raise NotConvertible(f"{{{{ {action} }}}}: unexpected arguments")
            value = _arg(words[0], term)
        else:
            value = _function(words[0], args, action)
    assert value is not None
    return value


def _arg(word: str, term: Callable[[str], str]) -> str:
    if word.startswith('"'):
        return cel_string(json.loads(word))
    if word.startswith("`"):
        return cel_string(word[1:-1])
    if re.fullmatch(r"-?\d+(\.\d+)?", word):
        return word
    if word.startswith("."):
        return term(word)
    raise NotConvertible(f"{word!r}: only .Input fields, strings and numbers convert")


def _function(name: str, args: list[str], action: str) -> str:
    if name in ("toJson", "toRawJson", "toPrettyJson", "mustToJson") and len(args) == 1:
        return args[0]  # a whole value keeps its type; inside text it is written as JSON
    if name == "toString" and len(args) == 1:
        return f"string({args[0]})"
    if name == "default" and len(args) == 2:
        return f"has({args[1]}) ? {args[1]} : {args[0]}" if "." in args[1] else args[1]
    if name == "index" and len(args) >= 2:
        return args[0] + "".join(f"[{a}]" for a in args[1:])
    if name == "len" and len(args) == 1:
        return f"size({args[0]})"
    string_function = _string_function(name, [f"({a})" for a in args], action)
    if string_function is not None:
        return string_function
    if name in _SPRIG_NONE:
        raise NotConvertible(f"template function {name!r} in {{{{ {action} }}}} has no CEL "
                             "counterpart in eventsvc (CEL offers size, contains, startsWith, "
                             "endsWith, matches, lowerAscii, upperAscii, trim, substring, "
                             "replace, split, join)")  # fmt: skip
    raise NotConvertible(f"template function {name!r} in {{{{ {action} }}}} is not converted")


_STRING_FORMS = {
    "upper": "{s}.upperAscii()",
    "lower": "{s}.lowerAscii()",
    "trim": "{s}.trim()",
    "trimPrefix": "({s}.startsWith({0}) ? {s}.substring(size({0})) : {s})",
    "trimSuffix": "({s}.endsWith({0}) ? {s}.substring(0, size({s}) - size({0})) : {s})",
    "replace": "{s}.replace({0}, {1})",
    "splitList": "{s}.split({0})",
    "join": "{s}.join({0})",
}


def _string_function(name: str, args: list[str], action: str) -> str | None:
    """Sprig's string functions in CEL's strings extension; the piped value is the last
    argument, as in Go templates. None when `name` is not one of them."""
    arity = {"upper": 1, "lower": 1, "trim": 1, "trimPrefix": 2, "trimSuffix": 2,
             "replace": 3, "substr": 3, "trunc": 2, "splitList": 2, "join": 2}  # fmt: skip
    if name not in arity:
        return None
    if len(args) != arity[name]:
        raise NotConvertible(f"{name} in {{{{ {action} }}}} takes {arity[name]} arguments")
    *given, s = args
    if name in _STRING_FORMS:  # the piped value is {s}, the others {0}, {1}
        return _STRING_FORMS[name].format(*given, s=s)
    numbers = [_literal_int(g) for g in given]
    if None in numbers:
        raise NotConvertible(f"{name} in {{{{ {action} }}}}: only literal numbers convert")
    if name == "trunc":  # sprig: a negative n keeps the last -n characters
        [n] = numbers
        assert n is not None
        if n < 0:
            return f"(size({s}) > {-n} ? {s}.substring(size({s}) - {-n}) : {s})"
        return f"(size({s}) > {n} ? {s}.substring(0, {n}) : {s})"
    start, end = numbers  # sprig substr: start < 0 means 0; end < 0 or past the end: to the end
    assert start is not None and end is not None
    start = max(start, 0)
    if end < 0:
        return f"{s}.substring({start})"
    return f"(size({s}) > {end} ? {s}.substring({start}, {end}) : {s}.substring({start}))"


def _literal_int(text: str) -> int | None:
    inner = text.strip("()")
    return int(inner) if re.fullmatch(r"-?\d+", inner) else None
