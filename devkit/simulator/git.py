"""Real git for the simulator: bare repositories served through ``git http-backend``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

PRE_RECEIVE = r"""#!/usr/bin/env python3
# Refuses pushes that touch .github/workflows/ unless the token holds the workflows permission.
import os, subprocess, sys
ZERO = "0" * 40
if os.environ.get("HANDOFF_SIM_WORKFLOWS") == "write":
    sys.exit(0)
for line in sys.stdin:
    old, new, ref = line.split()
    if new == ZERO:
        continue
    if old == ZERO:
        cmd = ["git", "log", "--format=", "--name-only", new, "--not", "--all"]
    else:
        cmd = ["git", "diff", "--name-only", old, new]
    for path in subprocess.run(cmd, capture_output=True, text=True).stdout.split():
        if path.startswith(".github/workflows/"):
            print(f"refusing to allow a GitHub App to create or update workflow `{path}` "
                  "without `workflows` permission", file=sys.stderr)
            sys.exit(1)
"""

GIT_ENV = {"GIT_AUTHOR_NAME": "Simulator", "GIT_AUTHOR_EMAIL": "sim@example.invalid",
           "GIT_COMMITTER_NAME": "Simulator", "GIT_COMMITTER_EMAIL": "sim@example.invalid"}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run git and return its output; raise with git's own message on failure."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def create_bare(path: Path, files: dict[str, str], branch: str = "main",
                author: str = "") -> str:
    """A bare repository with one commit holding ``files``; returns the commit sha."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "--bare", "-q", f"--initial-branch={branch}", str(path))
    install_hooks(path)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git("init", "-q", f"--initial-branch={branch}", str(work))
        for name, content in files.items():
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "Initial commit", cwd=work)
        git("push", "-q", str(path), f"HEAD:refs/heads/{branch}", cwd=work)
    return rev_parse(path, branch) or ""


def install_hooks(bare: Path) -> None:
    """Accept pushes over HTTP and guard workflow files, as GitHub does; serve partial
    clones (``--filter``) and single objects by id, as GitHub does too."""
    git("config", "http.receivepack", "true", cwd=bare)
    git("config", "uploadpack.allowFilter", "true", cwd=bare)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)


def commit_files(bare: Path, branch: str, files: dict[str, str], message: str,
                 author: str = "Someone <someone@example.invalid>") -> str:
    """Commit files on top of a branch (as a person pushing would); returns the new sha."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "w"
        git("clone", "-q", "--branch", branch, str(bare), str(work))
        for name, content in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_text(content)
        git("add", "-A", cwd=work)
        git("commit", "-q", "--author", author, "-m", message, cwd=work)
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work,
            env={"HANDOFF_SIM_WORKFLOWS": "write"})
    return rev_parse(bare, branch) or ""


def rev_parse(bare: Path, ref: str) -> str | None:
    result = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{ref}"],
                            cwd=bare, capture_output=True, text=True)
    return result.stdout.strip() or None


def branch_heads(bare: Path) -> dict[str, str]:
    """Every branch and the commit it points at."""
    out = git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads",
              cwd=bare)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def diff_files(bare: Path, base: str, head: str) -> list[dict[str, object]]:
    """The files a PR changes, as ``git diff base...head`` sees them."""
    numstat = git("diff", "--numstat", f"{base}...{head}", cwd=bare).splitlines()
    status = dict(line.split("\t", 1)[::-1] for line in
                  git("diff", "--name-status", f"{base}...{head}", cwd=bare).splitlines())
    out = []
    for line in numstat:
        added, removed, name = line.split("\t", 2)
        patch = git("diff", f"{base}...{head}", "--", name, cwd=bare)
        adds = int(added) if added.isdigit() else 0
        dels = int(removed) if removed.isdigit() else 0
        out.append({"filename": name, "additions": adds, "deletions": dels,
                    "changes": adds + dels, "patch": patch,
                    "status": {"A": "added", "D": "removed", "M": "modified"}.get(
                        status.get(name, "M")[:1], "modified")})
    return out


async def _feed(stdin: asyncio.StreamWriter, body: bytes) -> None:
    """Write the request body; a backend that answers without reading it all closes the pipe,
    which under uvloop raises RuntimeError (a 500 for a fetch or push under load)."""
    try:
        if body:
            stdin.write(body)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError, RuntimeError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()


async def http_backend(project_root: Path, path_info: str, method: str, query: str,
                       content_type: str, body: bytes, remote_user: str,
                       extra_env: dict[str, str], content_encoding: str = ""
                       ) -> tuple[int, dict[str, str], bytes]:
    """Run ``git http-backend`` as a CGI; returns status, headers and body."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info, "REQUEST_METHOD": method, "QUERY_STRING": query,
        "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": remote_user, "REMOTE_ADDR": "127.0.0.1",
        "HTTP_CONTENT_ENCODING": content_encoding, **extra_env,
    }
    proc = await asyncio.create_subprocess_exec(
        "git", "http-backend", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdin and proc.stdout
    out, _ = await asyncio.gather(proc.stdout.read(), _feed(proc.stdin, body))
    await proc.wait()
    head, _, payload = out.partition(b"\r\n\r\n")
    if not _:
        head, _, payload = out.partition(b"\n\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.strip().split()[0])
        elif key:
            headers[key.strip()] = value.strip()
    return status, headers, payload


def diff_hunk(bare: Path, base: str, head: str, path: str, line: int | None) -> str:
    """The hunk of ``git diff base...head`` for ``path`` that holds ``line`` (of the head's
    file), cut after that line, as GitHub puts it in a review comment's ``diff_hunk``."""
    patch = subprocess.run(["git", "diff", f"{base}...{head}", "--", path], cwd=bare,
                           capture_output=True, text=True).stdout
    hunks = re.split(r"(?m)^(?=@@ )", patch)[1:]
    for hunk in hunks:
        match = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", hunk)
        if match is None:
            continue
        start, count = int(match.group(1)), int(match.group(2) or 1)
        if line is None or not start <= line < start + count:
            continue
        lines, at = hunk.splitlines(), start
        for index, text in enumerate(lines[1:], start=1):
            if not text.startswith("-"):
                if at == line:
                    return "\n".join(lines[:index + 1])
                at += 1
    return hunks[0].rstrip("\n") if hunks else ""


def mergeable(bare: Path, base: str, head: str) -> bool:
    """Whether ``head`` merges into ``base`` without conflicts (``git merge-tree``)."""
    result = subprocess.run(["git", "merge-tree", "--write-tree", "--name-only", base, head],
                            cwd=bare, capture_output=True, text=True)
    return result.returncode == 0


def behind(bare: Path, base: str, head: str) -> bool:
    """Whether ``base`` has commits ``head`` lacks."""
    return bool(git("rev-list", "--count", f"{head}..{base}", cwd=bare).strip() not in ("", "0"))
