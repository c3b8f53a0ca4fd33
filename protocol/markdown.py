"""Generate the tables of ``protocol/PROTOCOL.md`` from :mod:`protocol.messages`.

``python -m protocol.markdown`` rewrites every generated block of PROTOCOL.md in place: the
text between ``<!-- generated:NAME -->`` and ``<!-- end generated:NAME -->`` (NAME one of
:data:`BLOCKS`); the prose around the blocks is written by hand. ``--check`` exits with
status 1 (and says so) when the file differs from what would be written. Like
``protocol.ts``, the tables are never edited by hand: a limit changes in ``messages.py``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import math
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

from . import messages as m
from .codec import fields_of, number_text

SPEC_PATH = Path(__file__).resolve().with_name("PROTOCOL.md")

# Numbers people read better as expressions.
_NAMED_NUMBERS = {2**53 - 1: "2^53 − 1", 2**32 - 1: "2^32 − 1", math.pi: "π", -math.pi: "−π"}


def _number(x: float) -> str:
    for value, text in _NAMED_NUMBERS.items():
        if x == value:
            return text
    if isinstance(x, float) and abs(x) >= 1e5 and x.is_integer():
        return f"{x:.0e}".replace("e+0", "e").replace("e+", "e").replace("-", "−")
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}".replace(",", " ").replace("-", "−")
    return number_text(x).replace("-", "−")


def type_words(kind: Any) -> str:
    """A field's wire type as the spec writes it: ``int``, ``str | nil``, ``[float ×3]``, ..."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return " | ".join(type_words(a) for a in typing.get_args(kind) if a is not type(None)) + " | nil"
    if origin is Literal:
        return " | ".join(json.dumps(c) for c in typing.get_args(kind))
    if origin is tuple:
        args = typing.get_args(kind)
        return f"[{type_words(args[0])} ×{len(args)}]" if len(set(args)) == 1 else "[" + ", ".join(map(type_words, args)) + "]"
    if origin is list:
        return f"[{type_words(typing.get_args(kind)[0])}]"
    if dataclasses.is_dataclass(kind):
        return kind.__name__
    return {int: "int", float: "float", bool: "bool", str: "str", bytes: "bin"}[kind]


def _base_kind(kind: Any) -> Any:
    """``X`` for ``X | None``; the item type for lists; else ``kind``."""
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return _base_kind(next(a for a in typing.get_args(kind) if a is not type(None)))
    return kind


def _default_words(field) -> str:
    if field.required:
        return ""
    value = field.default() if field.factory else field.default
    if dataclasses.is_dataclass(value):
        return f"default: all of `{type(value).__name__}`'s defaults"
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return f"default `{str(value).lower()}`"
    if isinstance(value, str):
        return f"default `{json.dumps(value)}`"
    if isinstance(value, float) and not value.is_integer():
        return f"default {value:.4g}"
    return f"default {_number(value)}"


def limit_words(field) -> str:
    """What a field's ``spec`` says: range with unit, length, pattern, default, then its doc."""
    meta, kind = field.meta, _base_kind(field.kind)
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    parts = []
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        parts.append(f"in [{_number(lo)}, {_number(hi)}]{unit}")
    elif lo is not None:
        parts.append(f"≥ {_number(lo)}{unit}")
    elif hi is not None:
        parts.append(f"≤ {_number(hi)}{unit}")
    elif unit and meta.get("max_len") is None:
        parts.append(unit.strip())
    if meta.get("max_len") is not None:
        what = "bytes" if kind is bytes else "items" if typing.get_origin(kind) is list else "chars"
        parts.append(f"≤ {meta['max_len']:,} {what}".replace(",", " "))
    if meta.get("pattern"):
        parts.append(f"`{meta['pattern']}`")
    default = _default_words(field)
    if default:
        parts.append(default)
    text = ", ".join(parts)
    if meta.get("doc"):
        doc = meta["doc"].replace("``", "`")
        text = f"{text}; {doc}" if text else doc
    return text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _summary(cls: type) -> str:
    """The class docstring as one paragraph (the base class's is not inherited)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclass writes where there is none
        return ""
    return " ".join(inspect.cleandoc(doc).replace("``", "`").split()) if doc else ""


def field_table(cls: type) -> list[str]:
    rows = ["| field | type | limits / meaning |", "|---|---|---|"]
    for f in fields_of(cls):
        name = f"`{f.name}`" + ("" if f.required else " *opt*")
        rows.append(f"| {name} | {_cell(type_words(f.kind))} | {_cell(limit_words(f))} |")
    return rows


def _entry(heading: str, cls: type) -> list[str]:
    summary = _summary(cls)
    lines = [f"{heading}" + (f" — {summary}" if summary else ""), ""]
    if fields_of(cls):
        lines += field_table(cls)
    else:
        lines.append("(no fields)")
    return lines + [""]


def messages_block() -> list[str]:
    """Every message (client → server, then server → client) and every struct, with its fields."""
    lines: list[str] = []
    sections = (("Client → server", ("client", "both")), ("Server → client", ("server",)))
    for title, senders in sections:
        lines += [f"### {title}", ""]
        for type_, cls in m.MESSAGES.items():
            if cls.SENDER in senders:
                note = " (both directions)" if cls.SENDER == "both" else ""
                lines += _entry(f"**`{type_}`**{note}", cls)
    lines += ["### Structs", ""]
    for cls in m.STRUCTS:
        lines += _entry(f"**`{cls.__name__}`**", cls)
    return lines[:-1]


def errors_block() -> list[str]:
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| `{code}` | {_cell(meaning)} |" for code, meaning in m.ERROR_CODES.items()]
    return rows


def rates_block() -> list[str]:
    return [
        "| messages | sustained rate | burst |",
        "|---|---|---|",
        f"| `input` + `head_pose` | {m.INPUT_RATE_HZ} /s | {m.INPUT_BURST} |",
        f"| `caption` | {m.CAPTION_RATE_HZ} /s | {m.CAPTION_BURST} |",
        f"| `splat_ack` | {m.SPLAT_RATE_HZ} /s | {m.SPLAT_RATE_HZ} |",
        f"| everything else | {m.OTHER_RATE_HZ} /s | {m.OTHER_BURST} |",
    ]


def _constant_docs() -> dict[str, str]:
    """Module-level constants of messages.py with what they mean: the docstring under each,
    else the ``# ---- group ----`` comment above it."""
    source = Path(m.__file__).read_text()
    lines = source.splitlines()
    body = ast.parse(source).body
    docs: dict[str, str] = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            doc = nxt.value.value
        else:
            groups = (re.fullmatch(r"# -+ (.*?) -+", lines[k].strip()) for k in range(node.lineno - 1, -1, -1))
            group = next((g for g in groups if g), None)
            doc = group.group(1) if group else ""
        docs[node.targets[0].id] = " ".join(doc.replace("``", "`").split())
    return docs


def _constant_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if name.endswith("_BYTES") and value >= 1024:
        mib, kib = value / 2**20, value / 2**10
        return f"{value:,}".replace(",", " ") + (f" ({mib:g} MiB)" if mib >= 1 else f" ({kib:g} KiB)")
    return _number(value)


def constants_block() -> list[str]:
    """Every limit constant (``PROTOCOL_VERSION``, ``MAX_*``, ``MIN_*``, patterns, rates)."""
    docs = _constant_docs()
    rows = ["| constant | value | meaning |", "|---|---|---|"]
    for name, doc in docs.items():
        value = getattr(m, name)
        if name.startswith("_") or not isinstance(value, (int, float, str)) or isinstance(value, bool):
            continue
        rows.append(f"| `{name}` | {_cell(_constant_value(name, value))} | {_cell(doc)} |")
    return rows


BLOCKS: dict[str, Callable[[], list[str]]] = {
    "constants": constants_block,
    "messages": messages_block,
    "errors": errors_block,
    "rates": rates_block,
}

_BLOCK = re.compile(r"(<!-- generated:(\w+) -->\n)(.*?)(<!-- end generated:\2 -->)", re.S)


def render(text: str) -> str:
    """``text`` (PROTOCOL.md) with every generated block written afresh.

    Raises:
        ValueError: a block names no generator, or a generator has no block.
    """
    seen = []

    def fill(match: re.Match) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise ValueError(f"PROTOCOL.md: no generator for block {name!r}; known: {', '.join(BLOCKS)}")
        seen.append(name)
        note = f"<!-- written by `python -m protocol.markdown` from protocol/messages.py: do not edit -->\n"
        return match.group(1) + note + "\n".join(BLOCKS[name]()) + "\n" + match.group(4)

    out = _BLOCK.sub(fill, text)
    missing = [name for name in BLOCKS if name not in seen]
    if missing:
        raise ValueError(f"PROTOCOL.md lacks the generated block(s) {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protocol.markdown", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if PROTOCOL.md is stale instead of writing it")
    args = parser.parse_args(argv)
    text = SPEC_PATH.read_text()
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{SPEC_PATH} is stale: run `python -m protocol.markdown`", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        SPEC_PATH.write_text(fresh)
    print(f"wrote the generated tables of {SPEC_PATH} ({len(m.MESSAGES)} messages, {len(m.STRUCTS)} structs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
