"""Cold starts: a worker that has never seen a repository fetches its commits, and the trees
and files of the commits the job checks out only; later jobs fetch what they need on top."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sim import app_client, simulator

from bot.executor.partial import missing
from bot.executor.workspace import Workspaces
from devkit.simulator.git import commit_files

REPO = "acme/history"


def history(path: Path, commits: int, files: int) -> Path:
    """A repository whose every commit rewrites one of ``files`` files (git fast-import)."""
    subprocess.run(["git", "init", "-q", "--initial-branch=main", str(path)], check=True)
    stream = []
    for n in range(commits):
        body = f"VALUE = {n}\n"
        stream.append(f"commit refs/heads/main\ncommitter T <t@x> {1700000000 + n} +0000\n"
                      f"data 2\nc\nM 644 inline src/m{n % files}.py\ndata {len(body)}\n{body}\n")
    subprocess.run(["git", "fast-import", "--quiet"], input="".join(stream).encode(),
                   cwd=path, check=True)
    return path


def objects(git_dir: Path) -> dict[str, int]:
    """How many objects of each type the repository holds (present ones only)."""
    listing = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file",
                              "--batch-all-objects", "--batch-check=%(objecttype)"],
                             capture_output=True, text=True, check=True).stdout.split()
    return {kind: listing.count(kind) for kind in ("commit", "tree", "blob")}


async def test_a_cold_mirror_fetches_the_history_and_only_the_checked_out_files(
        tmp_path: Path) -> None:
    async with simulator(tmp_path / "sim") as sim:
        repo = sim.import_repo(REPO, history(tmp_path / "src", 300, 40))
        served = objects(repo.path)
        assert served == {"commit": 300, "tree": 600, "blob": 300}
        app = app_client(sim)
        url, token = f"{sim.base_url}/{REPO}.git", await app.repo(repo.installation_id,
                                                                  REPO).token()
        await app.close()
        work = Workspaces(tmp_path / "data")
        co = await work.checkout(1, REPO, "agent/issue-1", "main", url, token)
        mirror = work.mirror_path(REPO)
        # Every commit, the tip's two trees and its 40 files: not the 560 older ones.
        assert objects(mirror) == {"commit": 300, "tree": 2, "blob": 40}
        assert (co.work_tree / "src/m19.py").read_text() == "VALUE = 299\n"
        assert len(await co.git("log", "--format=%H")) // 41 == 300  # the whole history
        base = await co.rev("HEAD")
        # The baseline copy is written from git objects: they are all there.
        copy = await work.snapshot(co, 1, "agent/issue-1", "main", base, base)
        assert (copy / "src/m0.py").read_text() == "VALUE = 280\n"
        # A commit kept for a later attempt goes into the partial mirror and is found there.
        (co.work_tree / "src/m0.py").write_text("VALUE = -1\n")
        await co.git("add", "-A")
        await co.git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", "mine")
        await work.keep(1, REPO, co, kept := await co.rev("HEAD"))

        # The default branch moves on: the next job fetches the new commit and its files.
        commit_files(repo.path, "main", {"src/m1.py": "VALUE = 1000\n"}, "moved on")
        co2 = await work.checkout(2, REPO, "agent/issue-1", "main", url, token)
        assert (co2.work_tree / "src/m1.py").read_text() == "VALUE = 1000\n"
        assert await co2.rev(f"{kept}^") == base  # the kept commit, through the mirror
        assert (await co2.git("show", f"{kept}:src/m0.py")) == "VALUE = -1\n"
        assert await missing(mirror, [await co2.rev("refs/remotes/origin/main")]) == []
        assert objects(mirror)["blob"] < 50


async def test_a_local_repository_is_cloned_whole(tmp_path: Path) -> None:
    """A path (no server to filter) still works: the clone is simply complete."""
    src = history(tmp_path / "src", 20, 5)
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(tmp_path / "o.git")],
                   check=True)
    work = Workspaces(tmp_path / "data")
    co = await work.checkout(1, REPO, "agent/issue-1", "main", str(tmp_path / "o.git"), "")
    assert (co.work_tree / "src/m4.py").read_text() == "VALUE = 19\n"
    assert objects(work.mirror_path(REPO))["blob"] == 20


async def test_a_server_that_sends_no_single_objects_is_cloned_whole(tmp_path: Path) -> None:
    """Filters served, but no object asked for by id (``allowAnySHA1InWant`` off): the
    partial mirror cannot fetch a checkout's files, so the repository is cloned whole."""
    async with simulator(tmp_path / "sim") as sim:
        repo = sim.import_repo(REPO, history(tmp_path / "src", 30, 5))
        subprocess.run(["git", "config", "uploadpack.allowAnySHA1InWant", "false"],
                       cwd=repo.path, check=True)
        app = app_client(sim)
        token = await app.repo(repo.installation_id, REPO).token()
        await app.close()
        work = Workspaces(tmp_path / "data")
        co = await work.checkout(1, REPO, "agent/issue-1", "main",
                                 f"{sim.base_url}/{REPO}.git", token)
        assert (co.work_tree / "src/m4.py").read_text() == "VALUE = 29\n"
        assert objects(work.mirror_path(REPO))["blob"] == 30
