"""After the setup steps: no secret stays in a file the agent could read.

A step may write what it was given into a file (``~/.netrc``, an ``.npmrc`` with a token, a
log). Before the agent's first command, a small program in the sandbox, run as the sandbox's
user with the network closed, reads every file the sandbox can write and rewrites those that
hold a secret in any of its forms (``bot.logs.forms``: plain, JSON-escaped, hex, base64),
each occurrence replaced by ``[redacted]``; a file it cannot rewrite is deleted. The secrets
reach it on stdin, never in its command line or environment. What it changed is returned, for
the transcript; a file it could neither rewrite nor delete ends the job.
"""

from __future__ import annotations

import json
import shlex

from bot.executor.sandbox import CommandResult, Sandbox
from bot.logs import forms

# Where a sandbox can write something that outlives a command (bubblewrap keeps only the
# workspace; a container also its tmpfs mounts).
ROOTS = ("/workspace", "/tmp", "/var/tmp", "/dev/shm", "/run")
SKIP = ("/run/handoff-egress",)

PROGRAM = r"""
import json, os, stat, sys
needles = sorted({n.encode() for n in json.load(sys.stdin)}, key=len, reverse=True)
longest = max(map(len, needles))
skip = tuple(sys.argv[1].split(":"))
changed, failed = [], []

def holds(path):
    with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
        tail = b""
        while chunk := fh.read(1 << 22):
            data = tail + chunk
            if any(n in data for n in needles):
                return True
            tail = data[-longest:]
    return False

def clean(path, size):
    if size <= 64 << 20:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
            data = fh.read()
        for n in needles:
            data = data.replace(n, b"[redacted]")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return "rewritten"
        except OSError:
            pass
    os.unlink(path)
    return "deleted"

for root in sys.argv[2:]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.join(folder, d).startswith(skip)]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or not holds(path):
                    continue
            except OSError:
                continue
            try:
                changed.append([path, clean(path, st.st_size)])
            except OSError as exc:
                failed.append([path, exc.strerror or str(exc)])
print(json.dumps({"changed": changed, "failed": failed}))
"""


class SecretLeft(Exception):
    """A file holds a secret and could not be cleaned; the message names it."""


async def scrub(sandbox: Sandbox, secrets: list[str]) -> list[str]:
    """Remove ``secrets`` from every file the sandbox can write; returns what was changed
    (``path (rewritten)``). Raises SecretLeft when a file could not be cleaned."""
    needles = sorted({f for s in secrets for f in forms(s) if len(f) >= 8})
    if not needles:
        return []
    command = (f"exec /usr/bin/python3 -I -c {shlex.quote(PROGRAM)} "
               f"{shlex.quote(':'.join(SKIP))} {' '.join(ROOTS)}")
    done = await sandbox.exec(command, timeout=300, stdin=json.dumps(needles).encode())
    report = _report(done)
    if report["failed"]:
        raise SecretLeft(", ".join(f"{path} ({why})" for path, why in report["failed"][:10]))
    return [f"{path} ({how})" for path, how in report["changed"]]


def _report(done: CommandResult) -> dict[str, list[list[str]]]:
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SecretLeft(f"the check for secrets left in files did not finish "
                         f"({done.describe()}: {done.stderr.strip()[-300:]})") from None
    if not isinstance(report, dict):
        raise SecretLeft("the check for secrets left in files gave no report")
    return report
