"""Text the agent or the repository wrote, made inert before Handoff posts it: no live
mentions, issue references or closing keywords, no images or raw HTML, and names in code
spans that nothing inside them can close.

Each change inserts U+200B (a zero-width space), so the text reads the same but GitHub finds
no ``@team``, no ``#1``, no ``fixes #1``, no ``<img>`` and no ``![…](…)`` in it."""

from __future__ import annotations

import re

ZW = "\u200b"
MENTION = re.compile(r"@(?=[A-Za-z0-9])")
ISSUE_REF = re.compile(r"(#|\bGH-)(?=\d)", re.IGNORECASE)
# A closing keyword followed (through markup, a colon, spaces) by anything that names an
# issue: ``#1``, ``GH-1``, ``owner/repo#1``, or an issue's URL.
CLOSING = re.compile(r"\bc(?=lose[sd]?\b)|\bf(?=ix(?:e[sd])?\b)|\br(?=esolve[sd]?\b)",
                     re.IGNORECASE)
CLOSING_TAIL = re.compile(r"[^\w\n]{0,12}(?:#|gh-|https?:|www\.|[\w.-]+/[\w.-]+#)",
                          re.IGNORECASE)
HTML_START = re.compile(r"<(?=[A-Za-z/!?])")
IMAGE_START = re.compile(r"!(?=\[)")
ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x85\u2028\u2029]")
CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")
MAX_NAME = 500


def neutral(text: str) -> str:
    """Plain text (a commit message, a title) with no live mention, issue reference or
    closing keyword."""
    text = MENTION.sub("@" + ZW, text)
    text = ISSUE_REF.sub(lambda m: m.group(1) + ZW, text)
    return CLOSING.sub(_break_keyword, text)


def _break_keyword(m: re.Match[str]) -> str:
    letter = m.group(0)
    return letter + ZW if CLOSING_TAIL.match(m.string, _word_end(m.string, m.end())) \
        else letter


def _word_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return end


def inert(text: str) -> str:
    """Agent text for a Markdown body: ``neutral``, and no images, raw HTML or entities
    (they show as the characters typed)."""
    text = CONTROLS.sub("\ufffd", neutral(text))
    text = HTML_START.sub("<" + ZW, text)
    text = IMAGE_START.sub("!" + ZW, text)
    return ENTITY.sub("&" + ZW, text)


def inline(text: object) -> str:
    """Agent text inside a line of Markdown (a list item, a sentence): ``inert``, one line."""
    return LINE_BREAKS.sub(" ", inert(str(text))).strip()


def cell(text: object) -> str:
    """Agent text in a table cell: ``inline``, with its pipes escaped."""
    return inline(text).replace("|", "\\|")


def quote(text: object) -> str:
    """Agent text as its own block: a quote of ``inert`` lines that nothing in it can leave."""
    lines = LINE_BREAKS.sub("\n", inert(str(text).strip())).split("\n")
    return "\n".join(f"> {line}".rstrip() for line in lines) if any(lines) else "> (none)"


def code(text: object) -> str:
    """A name (a test id, a path, a host, a command) as a code span it cannot close: the
    fence is longer than any run of backticks inside, padded when the name starts or ends
    with a backtick or a space, with line breaks made spaces."""
    name = CONTROLS.sub("\ufffd", neutral(LINE_BREAKS.sub(" ", str(text))))
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME] + "…"
    if not name:
        return "` `"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", name)), default=0) + 1)
    pad = " " if name[0] in "` " or name[-1] in "` " else ""
    return f"{fence}{pad}{name}{pad}{fence}"


def block(text: object) -> str:
    """Output (a command's) as a fenced code block it cannot close: the fence is longer than
    any run of backticks inside; nothing in a code block is a mention, link or HTML."""
    body = CONTROLS.sub("\ufffd", LINE_BREAKS.sub("\n", str(text)))
    fence = "`" * max(3, max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    return f"{fence}text\n{body}\n{fence}"


def plain(text: object, limit: int = 200) -> str:
    """A one-line plain-text title (a commit's, a pull request's) from text anyone wrote."""
    line = " ".join(CONTROLS.sub("", LINE_BREAKS.sub(" ", str(text))).split())
    return neutral(line[:limit])


FILTERS = {"code": code, "inline": inline, "cell": cell, "quote": quote}
