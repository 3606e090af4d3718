"""The code blocks of README.md and docs/*.md, for the tests that keep the documentation true.

A block right after `<!-- readme-test: TAG -->` (README) or `<!-- docs-test: TAG -->` (docs) is
run by a test: `run` (shell lines in a tiny workspace), `python`, or `reference` (needs
../shared/data/reference). Every other block is checked too (tests/test_docs.py): the `scaledb`
command lines of `bash` blocks parse, `yaml` blocks are valid spec sections, `python` blocks compile.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- (?:readme|docs)-test: (?P<tag>\w+) -->\n)?```(?P<lang>\w*)\n(?P<text>.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    text: str
    tag: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, with its language and test tag."""
    text = path.read_text()
    return [Block(path, text.count("\n", 0, m.start("lang")) + 1, m["lang"], m["text"], m["tag"])
            for m in _BLOCK.finditer(text)]


def tagged(path: Path, tag: str) -> list[str]:
    """The text of the blocks of `path` tagged `tag`."""
    return [b.text for b in blocks(path) if b.tag == tag]


def command_lines(text: str) -> list[str]:
    """Shell lines of a block: continuation lines joined, blank lines dropped."""
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def scaledb_calls(line: str) -> list[list[str]]:
    """The arguments of each `scaledb` command in a shell line (comments dropped; `&&`, `|`, `;` split)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    calls: list[list[str]] = []
    current: list[str] | None = None
    at_start = True
    for token in lexer:
        if token in ("&&", "||", "|", ";", "&"):
            at_start, current = True, None
        elif at_start:
            at_start = False
            if token == "scaledb" or token.endswith("/scaledb"):
                current = []
                calls.append(current)
        elif current is not None:
            current.append(token)
    return calls
