"""The warm environment on Kubernetes, through the whole stack and the fake cluster
(``kube_fake``): the first job's setup is kept by the worker, a second job on the repository
starts warm in a new pod (the setup downloads nothing, what it made is there), an image pushed
again under its tag or a changed lock file starts cold, and another repository never gets it."""

from __future__ import annotations

import http.server
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from agent_fixtures import BUGGY_REPO, FIX_SCRIPT, TEST_COMMAND
from test_kubernetes import NAMESPACE, started

from bot.executor.warm import OUT
from bot.jobs.store import Job
from devkit.simulator.git import commit_files
from devkit.stack import Stack, stack

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="the fake kubelet runs containers with bubblewrap")

REPO = "acme/calc"
PREPARED = {"test_prepared.py": "import os\n\n\ndef test_prepared():\n"
                                "    assert os.path.exists('.venv/marker')\n"
                                "    assert os.path.exists(os.path.expanduser("
                                "'~/.local/marker'))\n",
            "requirements.txt": "six\n"}


@contextmanager
def download_server() -> Iterator[tuple[int, list[str]]]:
    """A web server on the host that counts what the setup downloads (reached through the
    sandbox's egress proxy); its port and the paths asked for."""
    hits: list[str] = []

    class Counting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def config(port: int) -> str:
    """A setup that downloads something (counted) and leaves files in the work tree and in
    the home folder, as an install does."""
    fetch = (f"python3 -c \\\"import urllib.request as u; "
             f"u.urlopen('http://127.0.0.1:{port}/setup', timeout=5).read()\\\"")
    return (f"test_command: {TEST_COMMAND}\n"
            f"setup_command: \"{fetch} && mkdir -p .venv $HOME/.local && "
            "echo v > .venv/marker && echo h > $HOME/.local/marker\"\n")


async def job_on(s: Stack, repo: str) -> Job:
    job = await s.handed_over(repo, "add() subtracts", "Fix add().")
    assert job.state == "succeeded", job.reason
    return job


async def test_a_second_job_starts_warm_in_a_new_pod(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with download_server() as (port, hits):
        files = {**BUGGY_REPO, **PREPARED, ".github/handoff.yml": config(port)}
        async for cluster in started(tools=sys.prefix):
            monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig(tmp_path / "kubeconfig")))
            async with stack(tmp_path, FIX_SCRIPT, per_conversation=True, sandbox="kubernetes",
                             sandbox_image="handoff-sandbox:test",
                             kubernetes_proxy_host="127.0.0.1",
                             kubernetes_proxy_ports="47250-47299",
                             kubernetes_namespace=NAMESPACE, egress_allow_private=True,
                             egress_allow=[f"127.0.0.1:{port}"]) as s:
                repo = s.sim.add_repo(REPO, files)
                first = await job_on(s, REPO)
                assert hits == ["/setup"], first.result.setup
                assert first.result.setup.environment == "cold"
                assert first.result.setup.environment_reason.startswith(
                    "no environment kept for this repository yet; kept for the next jobs")
                [kept] = list((s.settings.data_dir / "warm").glob("*/acme/calc/*/meta.json"))
                # Once kept, the archives left the pod's work tree (its disk is the job's).
                assert cluster.deleted_pods and not list(cluster.root.glob(f"*/{OUT}/*.tar"))

                second = await job_on(s, REPO)
                assert hits == ["/setup"]  # the setup did not run again
                assert second.result.setup.environment == "warm", \
                    second.result.setup.environment_reason
                assert second.result.setup.steps == []
                # What the setup made is there in the new pod: the baseline's test of it passed.
                assert "1 passed, 1 failed" in second.result.tests.before, second.result
                # The kept environment went into the pod read-only, beside its work tree.
                pods = [r.body for r in cluster.sent("POST", "/pods$")
                        if r.body["metadata"]["labels"]["handoff.job"] == str(second.id)]
                mounts = pods[0]["spec"]["containers"][0]["volumeMounts"]
                assert {"name": "m1", "mountPath": "/opt/handoff/warm",
                        "readOnly": True} in mounts

                # The image pushed again under the same tag: the node runs another build, whose
                # digest the pod reports; the kept environment is not used, the setup runs.
                cluster.push("handoff-sandbox:test")
                rebuilt = await job_on(s, REPO)
                assert hits == ["/setup", "/setup"]
                assert (rebuilt.result.setup.environment,
                        rebuilt.result.setup.environment_reason.split(" (")[0]) == (
                    "cold", "the sandbox image was rebuilt under the same name since this "
                    "environment was kept")
                again = await job_on(s, REPO)  # kept anew from the rebuilt image: warm again
                assert again.result.setup.environment == "warm" and len(hits) == 2

                commit_files(repo.path, "main", {"requirements.txt": "six==1.16.0\n"}, "pin")
                third = await job_on(s, REPO)
                assert hits == ["/setup"] * 3
                assert third.result.setup.environment == "cold"
                assert third.result.setup.environment_reason.startswith(
                    "`requirements.txt` changed since the last environment was kept")
                assert not kept.exists()  # replaced by the new one

                # Another repository with the same files never starts from this one's.
                s.sim.add_repo("acme/twin", files)
                twin = await job_on(s, "acme/twin")
                assert twin.result.setup.environment == "cold"
                assert twin.result.setup.environment_reason.startswith(
                    "no environment kept for this repository yet")
                assert hits == ["/setup"] * 4
            assert not cluster.pods and not cluster.policies
