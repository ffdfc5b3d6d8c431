"""The shell commands a reader of ``docs/`` would type, read out of the Markdown itself.

A command is a line (with its ``\\`` continuations and multi-line quoted arguments) of a
fenced ``sh``/``bash``/``shell`` block, or an inline code span that starts like a command
(``medvision ...``, ``curl ...``, a dcmtk tool). Comment lines and trailing ``# ...``
comments are dropped; what remains is compared with whitespace collapsed, so re-wrapping a
paragraph does not change a command, but editing one does.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_FENCES = {"sh", "bash", "shell", "console"}
#: First words of an inline code span that make it a command (with at least one argument).
COMMAND_WORDS = ("medvision", "curl", "echoscu", "storescu", "findscu", "TCP_NODELAY=1")

_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_INLINE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class DocCommand:
    doc: str
    #: The command as written (newlines kept, comments dropped): what bash runs.
    text: str
    fenced: bool

    @property
    def key(self) -> str:
        """The command with line continuations and runs of whitespace collapsed."""
        return normalise(self.text)


def normalise(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# ...`` that is outside quotes (bash would ignore it too)."""
    for match in re.finditer(r"\s#", line):
        before = line[: match.start()]
        if before.count("'") % 2 == 0 and before.count('"') % 2 == 0:
            return before.rstrip()
    return line.rstrip()


def _complete(command: str) -> bool:
    if command.endswith("\\"):
        return False
    try:
        shlex.split(command)
    except ValueError:  # an unclosed quote: the argument goes on on the next line
        return False
    return True


def _block_commands(lines: list[str]) -> list[str]:
    commands: list[str] = []
    current = ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current = f"{current}\n{line.rstrip()}" if current else _strip_comment(line.strip())
        if current and _complete(current):
            commands.append(_strip_comment(current))
            current = ""
    if current:
        raise ValueError(f"unfinished command in a shell block: {current!r}")
    return commands


def extract(doc: Path) -> list[DocCommand]:
    """Every command of one Markdown file, in the order of the text."""
    found: list[DocCommand] = []
    prose: list[str] = []
    block: list[str] | None = None
    indent = ""
    language = ""
    for line in doc.read_text().splitlines():
        fence = _FENCE.match(line)
        if block is None and fence:
            block, indent, language = [], fence.group(1), fence.group(2)
            prose.append("")
        elif block is not None and fence:
            if language in SHELL_FENCES:
                found += [DocCommand(doc.name, c, True) for c in _block_commands(block)]
            block = None
        elif block is not None:
            block.append(line[len(indent) :] if line.startswith(indent) else line)
        else:
            prose.append(line)
    for span in _INLINE.findall("\n".join(prose)):
        words = span.split()
        if len(words) > 1 and (words[0] in COMMAND_WORDS or words[0].startswith("/usr/bin/")):
            found.append(DocCommand(doc.name, " ".join(words), False))
    return found


__all__ = ["DocCommand", "extract", "normalise"]
