"""Images in issues: the ones a reader sees in text from people who may steer are fetched
from the simulator with the installation token and reach the scripted model's request in
both wire formats; a text-only model gets their alt text and a note."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest
from agent_fixtures import CALC_WITH_TESTS, FIX_SCRIPT
from sim import app_client, simulator

from bot.executor.agent.models import make_model
from bot.executor.images import Caps, ImageFinder, ImageRef, attachment, fetch_all, media_type
from bot.server import running
from devkit.scripted import ScriptedModel
from devkit.stack import stack

REPO = "acme/calc"


def png(width: int = 2, height: int = 1) -> bytes:
    """A real PNG, as a screenshot tool writes one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_only_the_images_a_reader_sees_are_kept() -> None:
    finder = ImageFinder()
    text = finder.clean(
        "Crash: ![the error dialog](https://github.com/user-attachments/assets/1)\n\n"
        "<img src='https://github.com/user-attachments/assets/2' alt='second'>\n"
        "<img hidden src='https://github.com/user-attachments/assets/3'>\n"
        "<!-- ![x](https://github.com/user-attachments/assets/4) -->\n"
        "<details><summary>log</summary>![y](https://github.com/user-attachments/assets/5)"
        "</details>\n\n`![code](https://github.com/user-attachments/assets/6)`\n",
        "the issue")
    assert [(r.number, r.url.rsplit("/", 1)[1], r.alt) for r in finder.refs] == [
        (1, "1", "the error dialog"), (2, "2", "second")]
    assert text.startswith("Crash: [image 1: the error dialog]\n\n[image 2: second]")
    assert "`![code](https://github.com/user-attachments/assets/6)`" in text
    assert "assets/3" not in text and "assets/5" not in text


def test_attachment_urls_and_image_bytes() -> None:
    web = "https://github.com"
    assert attachment("https://github.com/user-attachments/assets/a-b", web)
    assert attachment("https://github.com/acme/calc/assets/1/a-b", web)
    assert attachment("https://private-user-images.githubusercontent.com/1/x.png?jwt=1", web)
    assert not attachment("https://evil.example/user-attachments/assets/a", web)
    assert not attachment("http://github.com/user-attachments/assets/a", web)
    assert not attachment("https://github.com/acme/calc/issues/1", web)
    assert attachment("https://ghe.corp/user-attachments/assets/a", "https://ghe.corp")
    assert media_type(png()) == "image/png" and media_type(b"<svg>") == ""


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_both_wire_formats_carry_the_image(provider: str, tmp_path: Path) -> None:
    image = tmp_path / "image-1.png"
    image.write_bytes(png())
    server = ScriptedModel([{"text": "I see it"}])
    async with running(server.app) as url:
        model = make_model(provider, f"{url}/v1" if provider == "openai" else url, "m", None)
        await model.complete("system", [{"role": "user", "content": "Fix it. [image 1: dialog]",
                                         "images": [{"path": str(image), "number": 1,
                                                     "alt": "dialog",
                                                     "media_type": "image/png"}]}], [])
    data = base64.b64encode(png()).decode()
    content = server.requests[0]["messages"][-1]["content"]
    if provider == "openai":
        assert content[0] == {"type": "text", "text": "Fix it. [image 1: dialog]"}
        assert content[1:] == [{"type": "text", "text": "[image 1] dialog"}, {
            "type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
    else:
        assert content[1] == {"type": "text", "text": "[image 1] dialog"}
        assert {k: v for k, v in content[2].items() if k != "cache_control"} == {
            "type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": data}}


@pytest.mark.podman
async def test_an_issues_image_reaches_the_models_request(tmp_path: Path) -> None:
    async with stack(tmp_path, FIX_SCRIPT) as s:
        s.sim.add_repo(REPO, CALC_WITH_TESTS)
        url = s.sim.attachments.add(REPO, png())
        theirs = s.sim.attachments.add(REPO, png(3, 3))
        number = s.sim.open_issue(REPO, "add() subtracts", (
            f"Clicking Save shows this:\n\n![the error dialog]({url})\n\n"
            "Also <img src=\"https://imgur.example/x.png\" alt=\"hosted elsewhere\">\n"),
            "acme").number
        s.sim.comment(REPO, number, f"me too ![mine]({theirs})", "stranger")
        s.sim.label_issue(REPO, number, "agent", "acme")
        job = await s.wait_job(lambda j: j.issue_number == number)
        assert job.state == "succeeded", job.reason
        first = s.model.requests[0]["messages"][1]["content"]
        assert "[image 1: the error dialog]" in first[0]["text"]
        # Never fetched: its alt text, which no reader sees, is hidden text and stays out.
        assert "[image 2]" in first[0]["text"] and "hosted elsewhere" not in str(first)
        assert "Images not shown to you, only their alt text: 2." in first[0]["text"]
        data = base64.b64encode(png()).decode()
        assert first[2] == {"type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{data}"}}
        assert len(first) == 3  # the outsider's image is not there
        key, other = url.rsplit("/", 1)[1], theirs.rsplit("/", 1)[1]
        assert s.sim.attachments.fetched == [(key, 200)] and other not in str(s.model.requests)
        pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
        assert "- image 1 from the issue (image/png, 1 KB)\n" in pr.body
        assert "- image 2 from the issue: not a GitHub attachment (`imgur.example`) " \
               "(left out)\n" in pr.body


@pytest.mark.podman
async def test_a_text_only_model_gets_the_alt_text(tmp_path: Path) -> None:
    async with stack(tmp_path, FIX_SCRIPT, model_images=False) as s:
        s.sim.add_repo(REPO, CALC_WITH_TESTS)
        url = s.sim.attachments.add(REPO, png())
        job = await s.handed_over(REPO, "add() subtracts",
                                  f"It fails like this: ![stack trace of add()]({url})")
        assert job.state == "succeeded", job.reason
        first = s.model.requests[0]["messages"][1]["content"]
        assert isinstance(first, str) and "[image 1: stack trace of add()]" in first
        assert "this model takes no images, so only their alt text is given" in first
        assert s.sim.attachments.fetched == []
        pr = next(i for i in s.sim.get_repo(REPO).issues.values() if i.pull)
        assert "- 1 image: alt text only (the model `scripted-1` takes no images)\n" in pr.body


async def test_images_past_the_caps_or_not_images_are_left_out(tmp_path: Path) -> None:
    """Fetched from the simulator with an installation token: the size, count and type caps,
    and a token for another repository gets nothing."""
    async with simulator(tmp_path / "sim") as sim:
        sim.add_repo(REPO, {"README.md": "x\n"})
        sim.add_repo("other/repo", {"README.md": "x\n"})
        gh = app_client(sim)
        token = await gh.repo(sim.get_repo(REPO).installation_id, REPO).token()
        urls = [sim.attachments.add(REPO, png()), sim.attachments.add(REPO, png() + b"x" * 5000),
                sim.attachments.add(REPO, b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
                sim.attachments.add("other/repo", png()), sim.attachments.add(REPO, png(4)),
                sim.attachments.add(REPO, png(5))]
        refs = [ImageRef(n, url, "", "the issue") for n, url in enumerate(urls, 1)]
        got, left_out = await fetch_all(refs, sim.base_url, token, tmp_path / "images",
                                        Caps(count=2, bytes_each=1000))
        await gh.close()
    assert [(i.ref.number, i.media_type) for i in got] == [(1, "image/png"), (5, "image/png")]
    assert got[0].path.read_bytes() == png() and got[0].path.parent == tmp_path / "images"
    assert left_out == ["image 2 from the issue: larger than 1 KB",
                        "image 3 from the issue: not a PNG, JPEG, GIF or WebP image",
                        "image 4 from the issue: GitHub answered 404",
                        "image 6 from the issue: over the limit of 2 images"]
