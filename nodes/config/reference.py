"""The key tables of docs/topology.md, rendered from the schema (`flotilla.nodes.config.schema`).

`python -m flotilla.nodes.config.topology --write docs/topology.md` rewrites them; a test
fails when the file and the schema disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from flotilla.nodes.config.schema import SECTIONS

BEGIN = "<!-- reference:begin -->\n"
END = "<!-- reference:end -->"


def shown(value: Any) -> str:
    """A default as the docs show it: ``none``, ``empty`` or the YAML value in backticks."""
    if value is None:
        return "none"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Mapping):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(map(str, value)) + "]`"
    return f"`{value}`"


def key_rows(section: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) of every key of `section`, in order."""
    rows = []
    for f in msgspec.structs.fields(SECTIONS[section]):
        meta = next(m for m in getattr(f.type, "__metadata__", ()) if isinstance(m, msgspec.Meta))
        extra = meta.extra or {}
        if f.required:
            default = "required"
        else:
            value = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
            default = extra["default"].replace("{default}", shown(value))
        rows.append((f.name, extra["type"], default, meta.description or ""))
    return rows


def reference_markdown() -> str:
    """The key tables of docs/topology.md."""
    parts = []
    for section in SECTIONS:
        parts.append(f"### `{section}`\n\n| key | type | default | meaning |\n|---|---|---|---|")
        for name, type_text, default, meaning in key_rows(section):
            parts.append(f"| `{name}` | {type_text} | {default} | {meaning} |")
        parts.append("")
    return "\n".join(parts)


def write_reference(doc: Path) -> None:
    """Replace the generated tables in `doc` (between the reference markers)."""
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{BEGIN}{reference_markdown()}\n{END}{tail}", encoding="utf-8")
