"""Griffe extension: render leadercron's reStructuredText-flavoured docstrings as Markdown.

The docstrings use a little reST that Markdown does not know:

* roles such as :class:`State`, :meth:`~leadercron.elector.Elector.stop` and
  :meth:`title <leadercron.scheduler.LeaderScheduler.observe>`: turned into code spans that link
  to the object's reference entry when it has one (optional cross-references, so a target that is
  not documented stays plain code instead of failing the build);
* ``text::`` before a literal block: the block is already a Markdown code block (indented), so
  the second colon goes;
* definition lists (a term line, then its definition indented): turned into the ``def_list``
  extension's syntax;
* a tree drawn with box-drawing characters: fenced as text so that it keeps its lines.

Loaded by mkdocstrings (``extensions:`` in ``mkdocs.yml``); the modules themselves are untouched.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|attr|exc|mod|data|obj|const):"
    r"`(?P<tilde>~?)(?P<text>[^`<]+?)\s*(?:<(?P<target>[^>`]+)>)?`"
)
TREE_CHARS = ("├", "└", "│")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as seen from ``obj``'s scope, or ``None``."""
    package, _, inner = name.partition(".")
    if inner and package == obj.package.name:
        try:
            return obj.package[inner].canonical_path
        except Exception:  # not loaded, or not a member
            return None
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except griffe.NameResolutionError:
            path = None
        except Exception:  # an alias whose target is not loaded
            path = None
        if path is not None:
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return None


def _roles(obj: griffe.Object, text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        shown = match["text"].strip()
        target = match["target"] or shown
        if match["tilde"] and not match["target"]:
            shown = shown.rsplit(".", 1)[-1]
        if match["role"] in ("meth", "func") and not shown.endswith(")"):
            shown += "()"
        code = f"<code>{html.escape(shown)}</code>"
        path = _resolve(obj, target.strip())
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return ROLE.sub(replace, text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        # A paragraph drawing a tree (not already an indented code block): fence it.
        starts_paragraph = not out or not out[-1].strip()
        if starts_paragraph and line.strip() and _indent(line) < 4:
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            paragraph = lines[i:j]
            if any(ch in p for p in paragraph[1:] for ch in TREE_CHARS):
                out.append("```text")
                out.extend(p.replace("``", "") for p in paragraph)
                out.append("```")
                i = j
                continue
        # reST literal-block marker.
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2]
            if stripped.strip():
                out.append(stripped + ":")
            i += 1
            continue
        # A definition list item: an unindented term, its definition indented below it.
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        previous = out[-1] if out else ""
        is_term = (
            line.strip()
            and _indent(line) == 0
            and not re.match(r"[*+-] |\d+\. ", line)
            and nxt.strip()
            and _indent(nxt) >= 4
            and (not previous.strip() or _indent(previous) >= 4 or previous.startswith(":   "))
        )
        if is_term:
            if previous.strip():
                out.append("")
            out.append(line)
            out.append(":   " + nxt.strip())
            i += 2
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= 4:
                out.append("    " + lines[i].strip())
                i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _walk(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        obj.docstring.value = _roles(obj, _blocks(obj.docstring.value))
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member)  # type: ignore[arg-type]


class SphinxMarkup(griffe.Extension):
    """Rewrite every docstring of a package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg)
