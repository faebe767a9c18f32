"""Images in the issue and its steering comments (screenshots in bug reports): found where a
reader sees them, fetched from GitHub with the installation token (GitHub's attachment URLs
only, size- and count-capped, checked to be an image by their bytes), and kept beside the
transcript for the model's first request. Text from people who may not steer never gets here,
so neither do their images."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from bot.executor.codespans import code_regions
from bot.executor.hidden import strip_hidden
from bot.github.tls import client_context
from bot.jobs.inputs import ImageRef
from bot.reporter.markdown import code

MD_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
HTML_IMAGE = re.compile(r"<img\b([^>]*)>", re.IGNORECASE)
ATTR = r"""\s{name}\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"""
HIDDEN_ATTRS = re.compile(r"\shidden\b|display\s*:\s*none", re.IGNORECASE)
MAX_ALT = 200
# GitHub's own image hosts: attachments redirect there with a signed URL (no token sent).
IMAGE_HOSTS = ("user-images.githubusercontent.com", "private-user-images.githubusercontent.com")
MAGIC = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
         (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif")]
MAX_REDIRECTS = 3


@dataclass
class Image:
    """A fetched image, on disk beside the transcript."""

    ref: ImageRef
    path: Path
    media_type: str
    size: int

    def message_part(self) -> dict[str, Any]:
        """How the conversation holds it (a path, so checkpoints stay small)."""
        return {"path": str(self.path), "media_type": self.media_type, "alt": self.ref.alt,
                "number": self.ref.number}


@dataclass
class ImageFinder:
    """Marks images before hidden text is stripped, so only those a reader sees are kept."""

    refs: list[ImageRef] = field(default_factory=list)
    tag: str = field(default_factory=lambda: secrets.token_hex(6))

    def clean(self, text: str | None, source: str) -> str:
        """``strip_hidden`` of ``text``, each visible image shown as ``[image N: alt]``."""
        found: list[tuple[str, str]] = []
        marked = mark(text or "", self.tag, found)
        marker = re.compile(rf"\u27e6img-{self.tag}-(\d+)\u27e7")

        def shown(m: re.Match[str]) -> str:
            url, alt = found[int(m.group(1))]
            # An image that is no GitHub attachment is never fetched nor shown: its alt text,
            # which a reader does not see either, is hidden text and stays out.
            alt = alt if attached_path(url) else ""
            ref = ImageRef(len(self.refs) + 1, url, alt, source)
            self.refs.append(ref)
            return f"[image {ref.number}: {alt}]" if alt else f"[image {ref.number}]"

        return marker.sub(shown, strip_hidden(marked))


def mark(text: str, tag: str, found: list[tuple[str, str]]) -> str:
    """``text`` with each image outside code replaced by a marker; ``found`` gets its URL
    and alt text (an ``<img>`` GitHub hides is left for ``strip_hidden`` to drop)."""
    code = code_regions(text)

    def in_code(m: re.Match[str]) -> bool:
        return any(start <= m.start() < end for start, end in code)

    def markdown(m: re.Match[str]) -> str:
        if in_code(m):
            return m.group(0)
        found.append((m.group(2), alt_text(m.group(1))))
        return f"\u27e6img-{tag}-{len(found) - 1}\u27e7"

    def html(m: re.Match[str]) -> str:
        attrs = m.group(1)
        src = attribute(attrs, "src")
        if in_code(m) or not src or HIDDEN_ATTRS.search(attrs):
            return m.group(0)
        found.append((src, alt_text(attribute(attrs, "alt"))))
        return f"\u27e6img-{tag}-{len(found) - 1}\u27e7"

    return HTML_IMAGE.sub(html, MD_IMAGE.sub(markdown, text))


def attribute(attrs: str, name: str) -> str:
    m = re.search(ATTR.format(name=name), attrs, re.IGNORECASE)
    return next((g for g in m.groups() if g is not None), "") if m else ""


def alt_text(text: str) -> str:
    """Alt text as one short line, hidden text stripped, no brackets to end its marker."""
    line = " ".join(strip_hidden(text).split())[:MAX_ALT]
    return line.replace("[", "(").replace("]", ")")


def attached_path(url: str) -> bool:
    """Whether ``url`` has the shape of a GitHub attachment on any host (the host is checked
    against the configured one when it is fetched)."""
    parts = urlsplit(url)
    return parts.hostname in IMAGE_HOSTS or "/user-attachments/assets/" in parts.path or \
        bool(re.search(r"/[^/]+/[^/]+/assets/", parts.path))


def attachment(url: str, web: str) -> bool:
    """A file people attached on GitHub: under the web host's ``/user-attachments/`` or a
    repository's ``/assets/``, or on GitHub's image hosts."""
    parts, home = urlsplit(url), urlsplit(web)
    if parts.scheme == "https" and parts.hostname in IMAGE_HOSTS:
        return True
    same = (parts.scheme, parts.netloc) == (home.scheme, home.netloc)
    path = parts.path.removeprefix(home.path.rstrip("/"))
    return same and (path.startswith("/user-attachments/assets/") or
                     bool(re.match(r"^/[^/]+/[^/]+/assets/", path)))


def media_type(head: bytes) -> str:
    """The image type its first bytes show ("" when they show none a model takes)."""
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return ""


@dataclass
class Caps:
    count: int = 5
    bytes_each: int = 3_750_000  # Anthropic takes 5 MB of base64 per image
    bytes_total: int = 10_000_000


def size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1_000_000 else f"{max(count // 1000, 1)} KB"


class Refused(Exception):
    """An image that is not fetched; the message says why."""


async def fetch_all(refs: list[ImageRef], web: str, token: str, folder: Path, caps: Caps
                    ) -> tuple[list[Image], list[str]]:
    """The images within the caps, and a line for each one left out (for the PR)."""
    images: list[Image] = []
    left_out: list[str] = []
    total = 0
    async with httpx.AsyncClient(timeout=30, follow_redirects=False,
                                 verify=client_context()) as client:
        for ref in refs:
            try:
                if len(images) >= caps.count:
                    raise Refused(f"over the limit of {caps.count} images")
                if not attachment(ref.url, web):
                    raise Refused(f"not a GitHub attachment ({code(urlsplit(ref.url).netloc)})")
                data = await download(client, ref.url, web, token,
                                      min(caps.bytes_each, caps.bytes_total - total))
                kind = media_type(data[:16])
                if not kind:
                    raise Refused("not a PNG, JPEG, GIF or WebP image")
            except Refused as exc:
                left_out.append(f"image {ref.number} from {ref.source}: {exc}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"image-{ref.number}.{kind.split('/')[1]}"
            path.write_bytes(data)
            total += len(data)
            images.append(Image(ref, path, kind, len(data)))
    return images, left_out


async def download(client: httpx.AsyncClient, url: str, web: str, token: str, cap: int
                   ) -> bytes:
    """The file's bytes, at most ``cap``; the token goes to GitHub's web host only, and a
    redirect is followed only to another attachment URL."""
    for _ in range(MAX_REDIRECTS + 1):
        home = urlsplit(url)[:2] == urlsplit(web)[:2]
        headers = {"authorization": f"token {token}"} if home else {}
        try:
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.is_redirect:
                    url = urljoin(url, resp.headers.get("location", ""))
                    if not attachment(url, web):
                        raise Refused("redirected away from GitHub")
                    continue
                if resp.status_code != 200:
                    raise Refused(f"GitHub answered {resp.status_code}")
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > cap:
                        raise Refused(f"larger than {size(cap)}")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise Refused(f"could not be fetched ({type(exc).__name__})") from exc
    raise Refused("too many redirects")
