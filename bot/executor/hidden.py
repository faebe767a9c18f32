"""Issue text as a reader sees it on GitHub: whatever GitHub does not show (comments, hidden
markup, elements it drops, format characters, collapsed sections) is left out before the
text reaches the prompt, and nothing in it can close the fence it is quoted in. Code that
GitHub surely shows as code (``codespans``) is set aside first and kept as written."""

from __future__ import annotations

import html
import re
import secrets
import unicodedata

from bot.executor.codespans import code_regions

FLAGS = re.DOTALL | re.IGNORECASE
HTML_COMMENT = re.compile(r"<!--.*?(-->|$)", re.DOTALL)
# Invisible characters that are not format characters (``Cf`` goes whole): combining grapheme
# joiner, Hangul fillers, Khmer vowels, Mongolian selectors, variation selectors, the blank
# Braille pattern.
HIDDEN_CHARS = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]")
# Elements whose content GitHub never shows.
DROPPED = re.compile(r"<(script|style|noscript|template|title|textarea|xmp|noembed|noframes)"
                     r"\b[^>]*>.*?(?:</\1\s*>|$)", FLAGS)
PROCESSING = re.compile(r"<\?.*?(?:\?>|$)", re.DOTALL)
CDATA = re.compile(r"<!\[CDATA\[.*?(?:\]\]>|$)", re.DOTALL)
DECLARATION = re.compile(r"<![A-Za-z][^>]*(?:>|$)")
HIDDEN_HTML = re.compile(
    r"<(details|picture|img|span|div|p)[^>]*(hidden|display:\s*none|alt=)[^>]*>.*?</\1>|"
    r"<img[^>]*>", FLAGS)
TITLE_ATTR = re.compile(r"""\s(title|alt|aria-label)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""",
                        re.IGNORECASE)
DETAILS = re.compile(r"<details\b([^>]*)>((?:(?!<details\b).)*?)</details\s*>", FLAGS)
DETAILS_OPEN = re.compile(r"<details\b([^>]*)>", re.IGNORECASE)
SUMMARY = re.compile(r"<summary\b[^>]*>(.*?)</summary\s*>", FLAGS)
QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
OPEN_ATTR = re.compile(r"(?:^|\s)open(?=[\s=/]|$)", re.IGNORECASE)
# Markdown that renders to nothing a reader sees: image alt text, link titles, links with no
# text (theirs is in the URL), and reference definitions such as ``[//]: # (a note)``, whose
# destination and title may be on the lines after the label.
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]*)[^)]*\)")
MD_LINK_TITLE = re.compile(r"(\[[^\]]*\]\([^)\s]+)\s+(\"[^\"]*\"|'[^']*'|\([^)]*\))\)")
EMPTY_LINK = re.compile(r"(?<!!)\[\s*\]\([^)]*\)|<a\b[^>]*>\s*</a\s*>", FLAGS)
TITLE = r"(?:\"(?:[^\"\n]|\n(?![ \t]*\n))*\"|'(?:[^'\n]|\n(?![ \t]*\n))*'|\([^()]*\))"
MD_REFERENCE_TITLED = re.compile(
    rf"^[ \t]{{0,3}}\[[^\]]+\]:[ \t]*(?:\n[ \t]*)?(?:<[^>\n]*>|\S+)"
    rf"(?:[ \t]*\n?[ \t]*{TITLE})?[^\n]*", re.MULTILINE)
MD_REFERENCE = re.compile(r"^[ \t]{0,3}\[[^\]]+\]:.*$", re.MULTILINE)
FENCE_TAG = re.compile(r"<(\s*/?\s*issue-data)", re.IGNORECASE)
PLACEHOLDER = re.compile(r"\0(\d+)\0")
LEFT_OUT = re.compile(r"\(a collapsed section(?: “[^”\n]*”)? is left out\)")
ROUNDS = 10
REGIONS = (HTML_COMMENT, DROPPED, PROCESSING, CDATA, DECLARATION, HIDDEN_HTML)


def strip_hidden(text: str | None) -> str:
    """Keep what a reader of the issue sees. Entities are decoded and the text NFKC-normalised
    first, so an encoded or full-width form is caught too; every tag that could close a data
    fence is escaped last."""
    if not text:
        return ""
    text, code = set_code_aside(text.replace("\0", "\ufffd"))
    text = visible_chars(unicodedata.normalize("NFKC", html.unescape(text)))
    for _ in range(ROUNDS):  # a removal can join the pieces of another hidden form
        before = text
        text = strip_markup(text)
        if text == before:
            break
    text = PLACEHOLDER.sub(lambda m: code[int(m.group(1))], text)
    return FENCE_TAG.sub(r"&lt;\1", text).strip()


def set_code_aside(text: str) -> tuple[str, list[str]]:
    """``text`` with what GitHub surely shows as code replaced by placeholders (a hidden
    element around one removes it), and that code as a reader sees it (no invisible
    characters)."""
    code: list[str] = []
    out, last = [], 0
    for start, end in code_regions(text):
        out += [text[last:start], f"\0{len(code)}\0"]
        code.append(visible_chars(as_written(text[start:end])))
        last = end
    return "".join(out + [text[last:]]), code


def as_written(code: str) -> str:
    """Code keeps its characters (a bug about ``"①".isdigit()`` stays one), unless their
    normal form would look like the data fence's tag."""
    normal = unicodedata.normalize("NFKC", code)
    return normal if FENCE_TAG.search(normal) else code


def visible_chars(text: str) -> str:
    """The text without format characters (category ``Cf``) or other invisible ones."""
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return HIDDEN_CHARS.sub("", text)


def strip_markup(text: str) -> str:
    """One pass over the markup GitHub does not show."""
    text = without_regions(text)
    text = collapsed(text)
    text = TITLE_ATTR.sub("", text)
    text = EMPTY_LINK.sub("", text)
    text = MD_IMAGE.sub(r"[image](\1)", text)
    text = MD_LINK_TITLE.sub(r"\1)", text)
    text = MD_REFERENCE_TITLED.sub("", text)
    return MD_REFERENCE.sub("", text)


def without_regions(text: str) -> str:
    """The text without comments, dropped elements, processing instructions, CDATA,
    declarations and hidden markup, each found on the whole text on its own, so a start that
    one reading puts inside another region still counts: every region GitHub hides is within
    what is removed, whatever the order GitHub reads them in."""
    hidden = sorted(m.span() for pattern in REGIONS for m in pattern.finditer(text))
    out, last = [], 0
    for start, end in hidden:
        if start > last:
            out.append(text[last:start])
        last = max(last, end)
    return "".join(out + [text[last:]])


def collapsed(text: str) -> str:
    """``<details>`` that GitHub shows closed: only its summary line is kept (innermost
    first; one never closed hides the rest of the text, as it does on GitHub)."""
    for _ in range(100):
        text, count = DETAILS.subn(_details, text)
        if not count:
            break
    while m := DETAILS_OPEN.search(text):
        if is_open(m.group(1)):
            text = text[:m.start()] + text[m.end():]
        else:
            text = text[:m.start()] + _left_out(text[m.end():])
    return text


def is_open(attrs: str) -> bool:
    return bool(OPEN_ATTR.search(QUOTED.sub("", attrs)))


def _details(m: re.Match[str]) -> str:
    return m.group(2) if is_open(m.group(1)) else _left_out(m.group(2))


def collapsed_left_out(text: str) -> int:
    """How many collapsed sections ``strip_hidden`` left out of ``text`` (its result)."""
    return len(LEFT_OUT.findall(text))


def _left_out(inner: str) -> str:
    label = SUMMARY.search(inner)
    name = " ".join(label.group(1).split()) if label else ""
    return f"(a collapsed section{f' “{name}”' if name else ''} is left out)"


def fence_tag() -> str:
    """A data fence's tag, new for each spec, so issue text cannot guess it."""
    return f"issue-data-{secrets.token_hex(6)}"
