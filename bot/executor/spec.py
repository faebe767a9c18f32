"""Specs: issue text made safe (see ``hidden``), criteria found, templates rendered strictly."""

from __future__ import annotations

import re
from typing import Any

from bot.executor.gitops import Checkout
from bot.executor.hidden import collapsed_left_out, fence_tag, strip_hidden
from bot.executor.images import ImageFinder
from bot.github.naming import looks_like_bot
from bot.jobs.inputs import SpecInputs
from bot.reporter import markdown
from bot.reporter.templates import Templates

CHECKLIST = re.compile(r"^\s*[-*]\s+\[[ xX]\]\s+(.+?)\s*$", re.MULTILINE)
# Headings that open or close a criteria section: a Markdown heading, a bold line, or a short
# label ending in a colon (the text after it belongs to the section).
SECTION = re.compile(r"^\s{0,3}(?:#{1,6}\s+(?P<md>[^#]+?)\s*:?\s*#*\s*$|"
                     r"(?:\*\*|__)(?P<bold>[^*_]{2,40}?)\s*:?\s*(?:\*\*|__)\s*:?\s*(?P<brest>.*)$|"
                     r"(?P<label>[A-Za-z][A-Za-z /]{2,40}):\s*(?P<lrest>.*)$)")
CRITERIA_HEADING = re.compile(r"^(acceptance criteria|expected( behaviou?r| result| outcome)?|"
                              r"definition of done)$", re.IGNORECASE)
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
INSTRUCTION_FILES = ("AGENTS.md", "CLAUDE.md", ".github/copilot-instructions.md")
MAX_INSTRUCTIONS = 20_000


def acceptance_criteria(text: str) -> list[str]:
    """Criteria the issue states explicitly: checklist items, else the items (or sentences)
    of an "Acceptance criteria" or "Expected ..." section. Anything else is not a criterion,
    however it is phrased; an issue without either states none."""
    items = [m.group(1) for m in CHECKLIST.finditer(text)]
    if items:
        return items[:20]
    out: list[str] = []
    section: list[str] | None = None
    inline = False
    for line in text.splitlines() + [""]:
        heading = SECTION.match(line)
        if heading:
            if section:
                out += section
            title = heading.group("md") or heading.group("bold") or heading.group("label")
            rest = heading.group("brest") or heading.group("lrest") or ""
            section = [] if CRITERIA_HEADING.match(title.strip()) else None
            inline = bool(rest.strip())  # "Expected: ..." ends at its paragraph
            if section is not None and inline:
                section.append(rest.strip())
            continue
        if section is None:
            continue
        if LIST_ITEM.match(line):
            section.append(LIST_ITEM.sub("", line).strip())
        elif line.strip() and not line.lstrip().startswith(("```", ">")):
            if section and not LIST_ITEM.match(line) and section[-1] and \
                    not _ends(section[-1]):
                section[-1] += " " + line.strip()
            else:
                section.append(line.strip())
        elif not line.strip() and section:
            out += [s for s in section if s]
            section = None if inline else []
    return list(dict.fromkeys(out))[:20]


def _ends(text: str) -> bool:
    return text.endswith((".", "!", "?", ":"))


async def repo_instructions(co: Checkout, rev: str) -> list[tuple[str, str]]:
    """The repository's own instructions for agents at ``rev``, read from git objects: a
    symlink or anything but a regular file is skipped."""
    found = []
    for name in INSTRUCTION_FILES:
        text = await co.read_blob(rev, name)
        if text is not None:
            found.append((name, strip_hidden(text[:MAX_INSTRUCTIONS])))
    return found


def choose_template(labels: list[str], mapping: dict[str, str]) -> str:
    """The template for an issue's labels; ``default`` when none is mapped."""
    for label in labels:
        if label.lower() in mapping:
            return mapping[label.lower()]
    return "default"


def collapsed_note(text: str) -> str:
    """What the PR says of collapsed ``<details>`` left out of a text the agent saw."""
    count = collapsed_left_out(text)
    return (f" (without {count} collapsed `<details>` section{'s' if count > 1 else ''}: "
            "GitHub hides them until opened; `<details open>` keeps one in)") if count else ""


def build_inputs(repo: str, issue: dict[str, Any], comments: list[dict[str, Any]],
                 writers: set[str], trigger_label: str,
                 instructions: list[tuple[str, str]] | None = None) -> SpecInputs:
    """Clean the issue, keep comments by writers only, find criteria, instructions and the
    images a reader sees in the text kept."""
    images = ImageFinder()
    body = images.clean(issue.get("body"), "the issue")
    clean_issue = {"number": issue["number"], "title": strip_hidden(issue.get("title")),
                   "body": body}
    kept, excluded = [], []
    for c in comments:
        author = str((c.get("user") or {}).get("login", ""))
        if looks_like_bot(c.get("user")):
            continue
        if author in writers:
            text = images.clean(c.get("body"), f"a comment by @{author}")
            if text:
                kept.append({"author": author, "body": text})
        else:
            excluded.append(f"comment {c.get('id')} by @{author}")
    labels = [str(lb["name"]) for lb in issue.get("labels") or [] if lb["name"] != trigger_label]
    instructions = instructions or []
    seen = [f"issue #{issue['number']} title and body" + collapsed_note(body)]
    seen += [f"comment by @{c['author']}" + collapsed_note(c["body"]) for c in kept]
    seen += [markdown.code(name) for name, _ in instructions]
    return SpecInputs(repo, clean_issue, labels, kept, excluded, acceptance_criteria(body),
                      instructions, seen, images=images.refs)


def render_spec(templates: Templates, name: str, inputs: SpecInputs, **extra: Any) -> str:
    """The spec template ``name`` rendered from ``inputs`` (``extra`` adds or overrides)."""
    context = dict(repo=inputs.repo, issue=inputs.issue, labels=inputs.labels,
                   comments=inputs.comments, criteria=inputs.criteria,
                   instructions=inputs.instructions, test_command="", baseline="",
                   fence=fence_tag())
    context.update(extra)
    return templates.render(name, **context)
