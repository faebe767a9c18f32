"""Where issue text is surely code on GitHub (fenced blocks, code spans), so markup shown
there as text (``<script>``, ``<template>``, ``<!--``) is not stripped as hidden.

Only what GitHub cannot read otherwise counts: a fence outside any HTML block and any
container, a code span in a paragraph whose backticks all pair on their own lines, with no
raw HTML, autolink or escaped backtick that could change how GitHub pairs them. When in doubt
a region is not code, and hidden-text stripping treats it like the rest."""

from __future__ import annotations

import re

FENCE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
CONTAINER = re.compile(r"(?:[ \t]*(?:>|[-*+](?=[ \t])|\d{1,9}[.)](?=[ \t])))*[ \t]*")
# HTML blocks that end at a marker (CommonMark types 1-5); any other ends at a blank line.
HTML_UNTIL = [
    (re.compile(r"<(?:script|pre|style|textarea)(?:[\s>]|$)", re.I),
     re.compile(r"</(?:script|pre|style|textarea)\s*>", re.I)),
    (re.compile(r"<!--"), re.compile(r"-->")),
    (re.compile(r"<\?"), re.compile(r"\?>")),
    (re.compile(r"<!\[CDATA\["), re.compile(r"\]\]>")),
    (re.compile(r"<![A-Za-z]"), re.compile(r">")),
]
MARKUP = re.compile(r"<[A-Za-z/!?]")
TICKS = re.compile(r"`+")
MAX_RUNS = 200  # backtick runs on one line (pairing is quadratic)
Region = tuple[int, int]


def code_regions(text: str) -> list[Region]:
    """Character ranges of ``text`` that GitHub surely shows as code."""
    regions: list[Region] = []
    paragraph: list[Region] = []
    fence: tuple[str, int, int, int] | None = None  # fence char, length, indent, start
    html_end: re.Pattern[str] | None | str = None
    pos = 0
    for raw in text.splitlines(keepends=True):
        start, line = pos, raw.rstrip("\r\n")
        pos += len(raw)
        if fence is not None:
            char, length, indent, opened = fence
            if re.fullmatch(rf" {{0,3}}{re.escape(char)}{{{length},}}[ \t]*", line):
                regions.append((opened, start + len(line)))
                fence = None
                continue
            if not line.strip() or len(line) - len(line.lstrip(" ")) >= indent:
                continue
            fence = None  # a line less indented may end a list item and the fence with it
        if html_end is not None:
            html_end = _html_goes_on(html_end, line)
            continue
        rest = line[CONTAINER.match(line).end():]  # type: ignore[union-attr]
        if not rest.strip():
            regions += spans(text, paragraph)
            paragraph = []
        elif (m := FENCE.fullmatch(line)) and not (m.group(2)[0] == "`" and "`" in m.group(3)):
            regions += spans(text, paragraph)
            paragraph, fence = [], (m.group(2)[0], len(m.group(2)), len(m.group(1)), start)
        elif MARKUP.match(rest):
            regions += spans(text, paragraph)
            paragraph, html_end = [], _html_start(rest)
        else:
            paragraph.append((start, start + len(line)))
    if fence is not None:
        regions.append((fence[3], len(text)))
    return sorted(regions + spans(text, paragraph))


def _html_start(line: str) -> re.Pattern[str] | None | str:
    """The end of an HTML block starting on ``line``: a marker, a blank line, or None when it
    ends on this line."""
    for begin, end in HTML_UNTIL:
        if m := begin.match(line):
            return None if end.search(line, m.end()) else end
    return "blank"


def _html_goes_on(end: re.Pattern[str] | str, line: str) -> re.Pattern[str] | None | str:
    if end == "blank":
        return None if not line.strip() else end
    assert isinstance(end, re.Pattern)
    return None if end.search(line) else end


def spans(text: str, lines: list[Region]) -> list[Region]:
    """The code spans of one paragraph, when GitHub must pair its backticks the same way:
    every run closes on its own line, nothing else in it is markup, no backtick is escaped
    and no span holds a table's pipe. Otherwise none."""
    found: list[Region] = []
    for start, end in lines:
        line = text[start:end]
        if "\\`" in line:
            return []
        runs = list(TICKS.finditer(line))
        if len(runs) > MAX_RUNS:
            return []  # not worth pairing: the paragraph is treated like prose
        outside, i, last = [], 0, 0
        while i < len(runs):
            close = next((j for j in range(i + 1, len(runs))
                          if len(runs[j].group()) == len(runs[i].group())), None)
            if close is None:
                return []  # an unpaired run: GitHub may pair it across lines or blocks
            outside.append(line[last:runs[i].start()])
            found.append((start + runs[i].start(), start + runs[close].end()))
            last, i = runs[close].end(), close + 1
        outside.append(line[last:])
        if any(MARKUP.search(part) for part in outside):
            return []
    if any("|" in text[a:b] for a, b in found):
        return []
    return found
