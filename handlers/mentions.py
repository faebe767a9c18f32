"""What a comment asks of the App by name: ``@<app-slug>`` anywhere in its text (not in code or
a quoted reply), and ``@<app-slug> rebase``."""

from __future__ import annotations

import re

# Text that mentions without asking: fenced and inline code, quoted lines (a reply quoting an
# earlier request), HTML comments.
NOT_ASKING = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]*`|<!--.*?(?:-->|\Z)|"
                        r"^[ \t]*>.*?$", re.DOTALL | re.MULTILINE)


def _pattern(slug: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w@/.-])@{re.escape(slug)}(?![\w-])", re.IGNORECASE)


def asking(body: str) -> str:
    """The comment's own words: without code, quotes and HTML comments."""
    return NOT_ASKING.sub(" ", body or "")


def mentions(body: str, slug: str) -> bool:
    """Whether the comment names the App (``@handoff``) in its own words."""
    return bool(slug) and bool(_pattern(slug).search(asking(body)))


def mention_command(body: str, slug: str) -> str | None:
    """The command right after the mention (``@handoff rebase`` is "rebase"), if it is one."""
    match = re.search(rf"{_pattern(slug).pattern}[ \t,:]+(rebase)\b", asking(body),
                      re.IGNORECASE)
    return match.group(1).lower() if match else None
