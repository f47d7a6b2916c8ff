"""The commands README.md and docs/*.md tell a user to type, read from the files so that the tests
in tests/docs/ run them as written (an edit to the docs is an edit to the tests).

A snippet is

- a fenced code block in ``bash``, ``sh``, ``shell`` or no language (shell commands), in
  ``console`` (a transcript: ``$ command`` lines, each followed by the output it shows), or in
  ``python`` (a program);
- an inline code span that starts with a program a user runs (:data:`PROGRAMS`), unless it only
  names a command (the program and one word: ``kubechat up``) or its options
  (``kubechat up --vllm-env``: long options without values), or is a synopsis
  (``kubechat up FILE...``: a placeholder in capitals, ``|``, ``...``, ``[`` or ``<``).

Output examples are fenced as ``text``; YAML and other languages are not commands.

``<!-- not-run: REASON -->`` right before a block (nothing but other HTML comments between) or
right before an inline span marks that snippet as not run; REASON says what it needs that the
tests do not have (a cluster, Docker, a GPU). Before an inline span the marker must not start
its line (markdown would make that line raw HTML): end the previous line with it.

Each snippet belongs to the scenario its section describes (:func:`scenario_of`): ``local``
(``kubechat up`` on this machine), ``cluster`` (the operator without Helm) or ``chart`` (after
the Helm chart is installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("kubectl", "kubechat", "helm", "docker", "curl", "pip", "pytest", "python", "bash")
SHELL_LANGUAGES = ("", "bash", "sh", "shell")
_MARKER = re.compile(r"<!--\s*not-run\b\s*:?(.*?)-->", re.S)
_PLACEHOLDER = re.compile(r"(?<![\w$])[A-Z]{2,}(?!\w)")


@dataclass(frozen=True)
class Snippet:
    """One command block or inline command of a document."""

    path: str  # relative to the repository
    line: int  # 1-based
    language: str  # "shell", "console" or "python"
    text: str
    section: tuple[str, ...]  # the headings it sits under, outermost first
    not_run: str | None  # the marker's reason ("" when it gives none); None: not marked
    inline: bool = False

    @property
    def where(self) -> str:
        """``path:line``, for messages."""
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Marker:
    """A ``not-run`` comment, and whether a snippet follows it."""

    path: str
    line: int
    reason: str
    used: bool


def doc_files() -> list[Path]:
    """README.md and every docs/*.md."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def all_snippets() -> list[Snippet]:
    """Every snippet of every documentation file, in reading order."""
    return [snippet for path in doc_files() for snippet in read(path)[0]]


def all_markers() -> list[Marker]:
    """Every ``not-run`` marker of every documentation file."""
    return [marker for path in doc_files() for marker in read(path)[1]]


def read(path: Path) -> tuple[list[Snippet], list[Marker]]:
    """The snippets of one markdown file and its ``not-run`` markers."""
    name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    return _Reader(name).read(path.read_text(encoding="utf-8"))


def output_example(snippet: Snippet) -> str | None:
    """The output the docs show for a snippet: the first ``text`` block after it and before the
    next snippet of its file, if any."""
    path = REPO / snippet.path
    later = [s.line for s in read(path)[0] if s.line > snippet.line]
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    for token in tokens:
        line = token.map[0] + 1 if token.map else 0
        if token.type == "fence" and token.info.strip() == "text" and line > snippet.line:
            return token.content if not later or line < min(later) else None
    return None


def scenario_of(snippet: Snippet) -> str:
    """Where a snippet's commands run: ``local``, ``cluster`` (no Helm) or ``chart``."""
    if snippet.path == "docs/helm.md":
        return "chart"
    if snippet.path == "docs/kubernetes.md":
        return "cluster"
    if "Kubernetes" in snippet.section:
        return "cluster" if "Without Helm" in snippet.section else "chart"
    return "local"


def shell_commands(text: str) -> list[str]:
    """The commands of a shell snippet, as bash reads them: a newline outside quotes ends a
    command (a backslash before it continues the line), ``&&`` outside quotes separates two,
    comments and blank lines are dropped."""
    commands, current, quote, index = [], "", "", 0
    while index < len(text):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char == "\\" and text.startswith("\n", index + 1):
            index += 2  # a line continuation: bash drops both characters
            continue
        elif char in "'\"":
            quote = char
        elif char == "#" and (not current or current[-1].isspace()):
            index = text.find("\n", index)
            index = len(text) if index < 0 else index
            continue
        elif char == "\n" or text.startswith("&&", index):
            commands.append(current)
            current, index = "", index + (1 if char == "\n" else 2)
            continue
        current += char
        index += 1
    return [command.strip() for command in [*commands, current] if command.strip()]


def steps(snippet: Snippet) -> list[tuple[str, list[str]]]:
    """A shell or console snippet's commands, each with the output lines the docs show for it
    (none for a shell block)."""
    if snippet.language == "console":
        return transcript(snippet.text)
    return [(command, []) for command in shell_commands(snippet.text)]


def transcript(text: str) -> list[tuple[str, list[str]]]:
    """A ``console`` snippet's ``$ command`` lines, each with the output lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:].strip(), []))
        elif steps and line.strip():
            steps[-1][1].append(line.strip())
    return steps


def is_command_span(text: str) -> bool:
    """Whether an inline code span is a command to type (see the module's docstring)."""
    words = text.split()
    if len(words) < 3 or words[0] not in PROGRAMS:
        return False
    if not words[1].startswith("-") and all(word.startswith("--") for word in words[2:]):
        return False  # names a command's options (`kubechat up --vllm-env`), gives no values
    return not (any(mark in text for mark in ("|", "...", "[", "<")) or _PLACEHOLDER.search(text))


class _Reader:
    """One pass over a file's markdown-it tokens."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.snippets: list[Snippet] = []
        self.markers: list[Marker] = []
        self.pending: list[int] = []  # indexes into markers waiting for the next snippet
        self.section: list[tuple[int, str]] = []

    def read(self, text: str) -> tuple[list[Snippet], list[Marker]]:
        tokens = MarkdownIt("commonmark").parse(text)
        for index, token in enumerate(tokens):
            line = (token.map[0] + 1) if token.map else 0
            if token.type == "heading_open":
                level = int(token.tag[1])
                self.section = [s for s in self.section if s[0] < level]
                self.section.append((level, tokens[index + 1].content.strip()))
            elif token.type == "html_block" and _MARKER.search(token.content):
                self._marked(token.content, line)
                if token.content.rstrip().endswith("-->"):
                    continue
                # a line starting with the marker is raw HTML, inline code and all: it marks
                # nothing (and the stray-marker check names it)
                self.pending = []
            elif token.type == "html_block" and token.content.lstrip().startswith("<!--"):
                continue  # other comments (the README's set-up markers) keep a marker pending
            elif token.type == "fence":
                self._fence(token, line)
            elif token.type == "inline":
                self._inline(token, line)
            if token.type not in ("paragraph_open", "list_item_open", "bullet_list_open"):
                self.pending = []
        return self.snippets, self.markers

    def _marked(self, text: str, line: int) -> None:
        for match in _MARKER.finditer(text):
            self.markers.append(Marker(self.path, line, " ".join(match.group(1).split()), False))
            self.pending.append(len(self.markers) - 1)

    def _take_marker(self) -> str | None:
        if not self.pending:
            return None
        reasons = []
        for index in self.pending:
            marker = self.markers[index]
            self.markers[index] = Marker(marker.path, marker.line, marker.reason, True)
            reasons.append(marker.reason)
        self.pending = []
        return "; ".join(reasons)

    def _fence(self, token: Token, line: int) -> None:
        info = token.info.strip().split()[0] if token.info.strip() else ""
        language = "shell" if info in SHELL_LANGUAGES else info
        if language not in ("shell", "console", "python"):
            return
        self._add(line, language, token.content, inline=False)

    def _inline(self, token: Token, line: int) -> None:
        for child in token.children or []:
            if child.type in ("softbreak", "hardbreak"):
                line += 1
            elif child.type == "html_inline" and _MARKER.search(child.content):
                self._marked(child.content, line)
            elif child.type == "code_inline" and is_command_span(child.content):
                self._add(line, "shell", child.content, inline=True)
            elif child.type == "text" and not child.content.strip():
                continue
            elif child.type != "html_inline":
                self.pending = [] if child.type != "code_inline" else self.pending

    def _add(self, line: int, language: str, text: str, *, inline: bool) -> None:
        section = tuple(title for _, title in self.section)
        self.snippets.append(
            Snippet(self.path, line, language, text, section, self._take_marker(), inline)
        )
