"""The prompts directory: every text a person or a model reads, rendered strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.reporter import markdown, wording


class Templates:
    """The prompts directory, rendered strictly: a missing variable is an error."""

    def __init__(self, directory: Path, override: Path | None = None) -> None:
        paths = [str(override), str(directory)] if override else [str(directory)]
        self.env = Environment(loader=FileSystemLoader(paths), undefined=StrictUndefined,
                               keep_trailing_newline=True, autoescape=False)
        self.env.filters.update(markdown.FILTERS)
        # The short sentences code fills in, for the templates that say the same thing.
        self.env.globals["wording"] = {k: v for k, v in vars(wording).items() if k.isupper()}

    def names(self) -> list[str]:
        return sorted(n[:-3] for n in self.env.list_templates() if n.endswith(".md")
                      and not n.startswith("_"))

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(f"{name}.md").render(**context).strip() + "\n"
