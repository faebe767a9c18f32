"""The issue's images in a request, in each wire format: OpenAI's ``image_url`` parts (data
URLs) and Anthropic's ``image`` blocks. The conversation holds only their files' paths."""

from __future__ import annotations

import base64
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=32)
def encoded(path: str) -> str | None:
    """The file as base64, or None when it is gone (a job taken over on another machine)."""
    try:
        return base64.b64encode(Path(path).read_bytes()).decode()
    except OSError:
        return None


def label(image: dict[str, Any]) -> str:
    return f"[image {image['number']}]" + (f" {image['alt']}" if image.get("alt") else "")


def _with_images(text: str, images: list[dict[str, Any]],
                 image_part: Callable[[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The text, then each image as its label and its wire format's part (``image_part`` of
    its media type and base64 data); an image whose file is gone is said to be so."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in images:
        data = encoded(image["path"])
        if data is None:
            parts.append({"type": "text", "text": f"{label(image)} (no longer available)"})
            continue
        parts += [{"type": "text", "text": label(image)}, image_part(image["media_type"], data)]
    return parts


def openai_parts(text: str, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _with_images(text, images, lambda media, data: {
        "type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}})


def anthropic_blocks(text: str, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _with_images(text, images, lambda media, data: {
        "type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
