"""Another App's checks on pushed commits: a CI the tests script per repository and branch.

GitHub Actions (by default) runs a check suite on every commit pushed to a scripted repository:
one workflow run whose jobs are check runs, each passing, failing with annotations and a job
log, hanging (never completing), or flaking (failing, then passing when re-run). A check may
instead report through the older commit statuses API. GitHub's webhooks follow, signed, to the
App's hook: ``check_run`` created and completed, ``check_suite`` completed, ``workflow_run``
completed, ``status``. Branch protection's required checks are kept here too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from devkit.simulator.render import iso
from devkit.simulator.state import CheckRun, GitHubError, Repo, User, next_id

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator

ACTIONS: dict[str, Any] = {"slug": "github-actions", "id": 15368, "name": "GitHub Actions",
                           "owner": "github"}
ACTIONS_BOT = User("github-actions[bot]", "Bot", id=41898282)
DEFAULT_LOG = """2026-01-01T00:00:00.0000000Z ##[group]Run make check
2026-01-01T00:00:00.1000000Z make check
2026-01-01T00:00:00.2000000Z ##[endgroup]
2026-01-01T00:00:01.0000000Z ##[error]Process completed with exit code 1.
"""


@dataclass
class Outcome:
    """What one check does on one commit."""

    conclusion: str | None  # success | failure | ...; None: it hangs, in progress for ever
    title: str = ""
    summary: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""
    flaky: bool = False  # fails now, passes when re-run
    status: bool = False  # reported as a commit status, not a check run


def outcome(spec: str | dict[str, Any]) -> Outcome:
    """An outcome from a script entry: ``"pass"``, ``"fail"``, ``"hang"``, ``"flake"``, or a
    mapping with ``result`` (one of those) and any of ``title``, ``summary``,
    ``annotations``, ``log``, ``status`` (true: a commit status)."""
    entry = {"result": spec} if isinstance(spec, str) else dict(spec)
    result = entry.pop("result", "pass")
    conclusion = {"pass": "success", "fail": "failure", "hang": None, "flake": "failure",
                  "timed_out": "timed_out", "cancelled": "cancelled"}[result]
    entry.setdefault("log", DEFAULT_LOG if conclusion == "failure" else "")
    return Outcome(conclusion, flaky=result == "flake", **entry)


@dataclass
class Suite:
    """A check suite of the CI App on one commit, and its workflow run."""

    id: int
    repo: str
    head_sha: str
    head_branch: str
    before: str
    runs: list[int] = field(default_factory=list)
    run_id: int = field(default_factory=next_id)  # the workflow run
    attempt: int = 1
    created_at: float = field(default_factory=time.time)

    def conclusion(self, runs: dict[int, CheckRun]) -> str | None:
        found = [runs[i] for i in self.runs]
        if not found or any(r.status != "completed" for r in found):
            return None
        bad = [r.conclusion for r in found if r.conclusion not in ("success", "neutral",
                                                                   "skipped")]
        return bad[0] if bad else "success"


@dataclass
class Job:
    """An Actions job: one check run's log."""

    id: int
    suite: int
    check_run: int
    name: str
    log: str


class ScriptedCI:
    """The CI App of the simulated repositories, as tests script it."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.delay = 0.3  # seconds from a push to the checks' results (GitHub takes longer)
        self.scripts: dict[tuple[str, str | None], dict[str, list[Outcome]]] = {}
        self.consumed: dict[tuple[str, str | None, str], int] = {}
        self.suites: dict[int, Suite] = {}
        self.jobs: dict[int, Job] = {}
        self.outcomes: dict[int, Outcome] = {}  # check run id -> what it was scripted to do
        self.statuses: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.required: dict[tuple[str, str], list[str]] = {}
        self.rulesets: dict[tuple[str, str], list[str]] = {}
        self.downloads: dict[str, str] = {}  # download token -> log text
        self.tasks: set[asyncio.Task[None]] = set()
        self.pushes: list[tuple[str, str, str, float]] = []  # repo, branch, sha, time.time()

    # --- what tests script ---------------------------------------------------------------

    def script(self, repo: str, checks: dict[str, Any], branch: str | None = None) -> None:
        """The checks run on each commit pushed (to ``branch``, or any branch): name to one
        outcome, or a list of them used push by push (the last one repeats)."""
        self.scripts[(repo.lower(), branch)] = {
            name: [outcome(s) for s in (spec if isinstance(spec, list) else [spec])]
            for name, spec in checks.items()}

    def protect(self, repo: str, branch: str, contexts: list[str]) -> None:
        """Branch protection that requires these checks (an empty list: none required)."""
        self.required[(repo.lower(), branch)] = list(contexts)

    def ruleset(self, repo: str, branch: str, contexts: list[str]) -> None:
        """A repository ruleset whose "require status checks" rule covers ``branch``."""
        self.rulesets[(repo.lower(), branch)] = list(contexts)

    def run_branch(self, repo: str, branch: str) -> None:
        """Run the checks on a branch's head now (as a push would)."""
        found = self.sim.get_repo(repo)
        sha = self._rev(found, branch)
        if sha:
            self.pushed(found, branch, "0" * 40, sha)

    def rerun(self, repo: str, suite_id: int) -> None:
        """A person re-runs a suite: flaky checks pass this time, the rest do as before."""
        found, suite = self.sim.get_repo(repo), self.suites[suite_id]
        suite.attempt += 1
        for run_id in suite.runs:
            run = found.check_runs[run_id]
            was = self.outcomes[run_id]
            again = Outcome("success") if was.flaky else was
            run.status, run.conclusion = "queued", None
            self._spawn(self._finish(found, suite, run, again, 0.0))

    # --- pushes --------------------------------------------------------------------------

    @staticmethod
    def _rev(repo: Repo, branch: str) -> str | None:
        from devkit.simulator.git import rev_parse
        return rev_parse(repo.path, branch)

    def pushed(self, repo: Repo, branch: str, before: str, after: str) -> None:
        """A commit reached ``branch``: the scripted checks start on it."""
        self.pushes.append((repo.full_name, branch, after, time.time()))
        script = self.scripts.get((repo.full_name.lower(), branch)) or \
            self.scripts.get((repo.full_name.lower(), None))
        if not script:
            return
        key = (repo.full_name.lower(), branch if (repo.full_name.lower(), branch) in
               self.scripts else None)
        picked = {}
        for name, outcomes in script.items():
            n = self.consumed.get((*key, name), 0)
            self.consumed[(*key, name)] = n + 1
            picked[name] = outcomes[min(n, len(outcomes) - 1)]
        self._spawn(self._run(repo, branch, before, after, picked))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, repo: Repo, branch: str, before: str, sha: str,
                   picked: dict[str, Outcome]) -> None:
        await asyncio.sleep(self.delay)
        suite = Suite(next_id(), repo.full_name, sha, branch, before)
        checks = {n: o for n, o in picked.items() if not o.status}
        if checks:
            self.suites[suite.id] = suite
        started: list[tuple[CheckRun, Outcome]] = []
        for name, plan in picked.items():
            if plan.status:
                self._status(repo, sha, branch, name, plan)
                continue
            run = CheckRun(next_id(), name, sha, "in_progress", app=ACTIONS["slug"],
                           suite_id=suite.id, started_at=time.time(),
                           details_url=f"{self.sim.base_url}/{repo.full_name}/actions/runs/"
                                       f"{suite.run_id}")
            repo.check_runs[run.id] = run
            suite.runs.append(run.id)
            self.outcomes[run.id] = plan
            self.jobs[run.id] = Job(run.id, suite.id, run.id, name, plan.log)
            self.emit_run(repo, run, "created")
            started.append((run, plan))
        for run, plan in started:
            await self._finish(repo, suite, run, plan, 0.0)

    async def _finish(self, repo: Repo, suite: Suite, run: CheckRun, plan: Outcome,
                      after: float) -> None:
        await asyncio.sleep(after)
        if plan.conclusion is None:
            run.status = "in_progress"
            return  # hangs
        run.status, run.conclusion, run.completed_at = "completed", plan.conclusion, time.time()
        run.annotations = list(plan.annotations)
        run.output = {"title": plan.title or f"{run.name}: {plan.conclusion}",
                      "summary": plan.summary or f"The {run.name} job ended: {plan.conclusion}."}
        self.emit_run(repo, run, "completed")
        if (conclusion := suite.conclusion(repo.check_runs)) is not None:
            self.sim.emit(repo, "check_suite", "completed", ACTIONS_BOT,
                          check_suite=self.suite_json(repo, suite))
            self.sim.emit(repo, "workflow_run", "completed", ACTIONS_BOT,
                          workflow_run=self.workflow_run_json(repo, suite, conclusion),
                          workflow={"id": 161335, "name": "CI", "path": ".github/workflows/ci.yml",
                                    "state": "active"})

    def _status(self, repo: Repo, sha: str, branch: str, context: str, plan: Outcome) -> None:
        state = {None: "pending", "success": "success"}.get(plan.conclusion, "failure")
        status = {"url": f"{self.sim.base_url}/repos/{repo.full_name}/statuses/{sha}",
                  "avatar_url": None, "id": next_id(), "node_id": "MDY6U3RhdHVzMQ==",
                  "state": state, "description": plan.summary or f"{context}: {state}",
                  "target_url": f"{self.sim.base_url}/ci/{context}", "context": context,
                  "created_at": iso(time.time()), "updated_at": iso(time.time())}
        self.statuses.setdefault((repo.full_name.lower(), sha), []).append(status)
        self.sim.emit(repo, "status", "", User("ci-bot", "Bot"), sha=sha, state=state,
                      context=context, description=status["description"],
                      target_url=status["target_url"], id=status["id"],
                      branches=[{"name": branch, "commit": {"sha": sha}}],
                      created_at=status["created_at"], updated_at=status["updated_at"])

    # --- bodies ----------------------------------------------------------------------------

    def pulls(self, repo: Repo, branch: str, sha: str) -> list[dict[str, Any]]:
        """The open pull requests whose head is ``branch`` (as check payloads list them)."""
        base = f"{self.sim.base_url}/repos/{repo.full_name}"
        out = []
        for issue in repo.issues.values():
            pull = issue.pull
            if pull is None or pull.head != branch or issue.state != "open":
                continue
            ref = {"id": repo.id, "url": base, "name": repo.name}
            out.append({"url": f"{base}/pulls/{issue.number}", "id": issue.id,
                        "number": issue.number,
                        "head": {"ref": branch, "sha": sha, "repo": ref},
                        "base": {"ref": pull.base, "sha": self._rev(repo, pull.base) or "",
                                 "repo": ref}})
        return out

    def app_json(self, slug: str) -> dict[str, Any]:
        """The App a check belongs to (the simulated App itself when ``slug`` is empty)."""
        body = self.sim.spec.example("check-run")["app"]
        if slug in ("", self.sim.world.app_slug):
            body.update(id=self.sim.world.app_id, slug=self.sim.world.app_slug, name="Handoff")
        else:
            body.update(id=ACTIONS["id"], slug=ACTIONS["slug"], name=ACTIONS["name"])
        return dict(body)

    def run_json(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        """A check run as the REST API and the webhooks show it, whichever App made it."""
        body = self.sim.render.check_run(repo, run)
        suite = self.suites.get(run.suite_id or 0)
        branch = suite.head_branch if suite else ""
        body["app"] = self.app_json(run.app)
        body["output"]["annotations_count"] = len(run.annotations)
        body["output"]["annotations_url"] = f"{body['url']}/annotations"
        body.update(started_at=iso(run.started_at), completed_at=iso(run.completed_at),
                    html_url=f"{self.sim.base_url}/{repo.full_name}/runs/{run.id}",
                    check_suite={"id": run.suite_id or run.id},
                    pull_requests=self.pulls(repo, branch, run.head_sha) if branch else [])
        return body

    def suite_json(self, repo: Repo, suite: Suite) -> dict[str, Any]:
        conclusion = suite.conclusion(repo.check_runs)
        return {"id": suite.id, "node_id": "MDEwOkNoZWNrU3VpdGUx", "head_branch":
                suite.head_branch, "head_sha": suite.head_sha, "before": suite.before,
                "after": suite.head_sha, "status": "completed" if conclusion else "in_progress",
                "conclusion": conclusion, "app": self.app_json(ACTIONS["slug"]),
                "url": f"{self.sim.base_url}/repos/{repo.full_name}/check-suites/{suite.id}",
                "check_runs_url": f"{self.sim.base_url}/repos/{repo.full_name}/check-suites/"
                                  f"{suite.id}/check-runs",
                "pull_requests": self.pulls(repo, suite.head_branch, suite.head_sha),
                "latest_check_runs_count": len(suite.runs),
                "created_at": iso(suite.created_at), "updated_at": iso(time.time())}

    def workflow_run_json(self, repo: Repo, suite: Suite, conclusion: str | None
                          ) -> dict[str, Any]:
        base = f"{self.sim.base_url}/repos/{repo.full_name}/actions/runs/{suite.run_id}"
        return {"id": suite.run_id, "name": "CI", "node_id": "WFR_sim", "check_suite_id":
                suite.id, "head_branch": suite.head_branch, "head_sha": suite.head_sha,
                "path": ".github/workflows/ci.yml", "run_number": suite.run_id % 1000,
                "run_attempt": suite.attempt, "event": "push",
                "status": "completed" if conclusion else "in_progress",
                "conclusion": conclusion, "workflow_id": 161335, "url": base,
                "html_url": f"{self.sim.base_url}/{repo.full_name}/actions/runs/{suite.run_id}",
                "jobs_url": f"{base}/jobs", "logs_url": f"{base}/logs",
                "pull_requests": self.pulls(repo, suite.head_branch, suite.head_sha),
                "created_at": iso(suite.created_at), "updated_at": iso(time.time())}

    def emit_run(self, repo: Repo, run: CheckRun, action: str) -> None:
        self.sim.emit(repo, "check_run", action, ACTIONS_BOT, check_run={
            **self.run_json(repo, run), "check_suite": {
                **self.suite_json(repo, self.suites[run.suite_id or 0])}})

    def job_json(self, repo: Repo, job: Job) -> dict[str, Any]:
        run = repo.check_runs[job.check_run]
        suite = self.suites[job.suite]
        body = self.sim.spec.example("job")
        base = f"{self.sim.base_url}/repos/{repo.full_name}"
        body.update(id=job.id, run_id=suite.run_id, head_sha=run.head_sha, name=job.name,
                    head_branch=suite.head_branch, status=run.status,
                    conclusion=run.conclusion, started_at=iso(run.started_at),
                    completed_at=iso(run.completed_at), run_attempt=suite.attempt,
                    check_run_url=f"{base}/check-runs/{run.id}", workflow_name="CI",
                    url=f"{base}/actions/jobs/{job.id}",
                    run_url=f"{base}/actions/runs/{suite.run_id}",
                    html_url=f"{self.sim.base_url}/{repo.full_name}/actions/runs/"
                             f"{suite.run_id}/job/{job.id}")
        return dict(body)

    def runs_for(self, repo: Repo, ref: str) -> list[CheckRun]:
        sha = self._rev(repo, ref) or ref
        return [r for r in repo.check_runs.values() if r.head_sha == sha]

    # --- REST -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        sim = self.sim

        def authed(permission: str, fn: Callable[[Request, Repo], Awaitable[Any]]
                   ) -> Callable[[Request, Any], Awaitable[tuple[int, Any]]]:
            async def handler(request: Request, body: Any) -> tuple[int, Any]:
                repo = sim.get_repo(f"{request.path_params['owner']}/"
                                    f"{request.path_params['repo']}")
                sim.check_token(request, repo, permission, "read")
                out = await fn(request, repo)
                return (302 if isinstance(out, Response) else 200), out
            return handler

        def run_of(request: Request, repo: Repo) -> CheckRun:
            run = repo.check_runs.get(int(request.path_params["id"]))
            if run is None:
                raise GitHubError(404, "Not Found")
            return run

        async def list_runs(request: Request, repo: Repo) -> Any:
            runs = self.runs_for(repo, request.path_params["ref"])
            if name := request.query_params.get("check_name"):
                runs = [r for r in runs if r.name == name]
            if status := request.query_params.get("status"):
                runs = [r for r in runs if r.status == status]
            if request.query_params.get("filter", "latest") == "latest":
                latest: dict[tuple[str, str], CheckRun] = {}
                for r in runs:
                    latest[(r.app, r.name)] = r
                runs = list(latest.values())
            return {"total_count": len(runs), "check_runs": [self.run_json(repo, r)
                                                             for r in runs]}

        async def list_suites(request: Request, repo: Repo) -> Any:
            sha = self._rev(repo, request.path_params["ref"]) or request.path_params["ref"]
            found = [self.suite_json(repo, s) | {
                "repository": sim.render.repo(repo),
                "head_commit": {"id": s.head_sha, "tree_id": s.head_sha, "message": "",
                                "timestamp": iso(s.created_at), "author": None,
                                "committer": None}}
                for s in self.suites.values() if s.repo == repo.full_name and s.head_sha == sha]
            return {"total_count": len(found), "check_suites": found}

        async def get_run(request: Request, repo: Repo) -> Any:
            return self.run_json(repo, run_of(request, repo))

        async def annotations(request: Request, repo: Repo) -> Any:
            run = run_of(request, repo)
            out = []
            for a in run.annotations:
                item = {"path": "", "start_line": 1, "end_line": 1, "start_column": None,
                        "end_column": None, "annotation_level": "failure", "title": None,
                        "message": "", "raw_details": None,
                        "blob_href": f"{sim.base_url}/{repo.full_name}/blob/{run.head_sha}/"
                                     f"{a.get('path', '')}"}
                item.update(a)
                item.setdefault("end_line", item["start_line"])
                out.append(item)
            return out

        async def get_job(request: Request, repo: Repo) -> Any:
            return self.job_json(repo, self._job(request))

        async def combined(request: Request, repo: Repo) -> Any:
            sha = self._rev(repo, request.path_params["ref"]) or request.path_params["ref"]
            latest: dict[str, dict[str, Any]] = {}
            for s in self.statuses.get((repo.full_name.lower(), sha), []):
                latest[s["context"]] = s
            found = list(latest.values())
            states = {s["state"] for s in found}
            state = "failure" if states & {"failure", "error"} else \
                "pending" if "pending" in states or not found else "success"
            url = f"{sim.base_url}/repos/{repo.full_name}"
            return {"state": state, "statuses": found, "sha": sha, "total_count": len(found),
                    "repository": sim.render.repo(repo)
                    | {"owner": sim.render.repo(repo)["owner"]},
                    "commit_url": f"{url}/commits/{sha}", "url": f"{url}/commits/{sha}/status"}

        async def required(request: Request, repo: Repo) -> Any:
            branch = request.path_params["branch"]
            contexts = self.required.get((repo.full_name.lower(), branch))
            if contexts is None:
                raise GitHubError(404, "Branch not protected")
            url = (f"{sim.base_url}/repos/{repo.full_name}/branches/{branch}/protection/"
                   "required_status_checks")
            return {"url": url, "strict": False, "contexts": contexts,
                    "checks": [{"context": c, "app_id": None} for c in contexts],
                    "contexts_url": f"{url}/contexts"}

        async def rules(request: Request, repo: Repo) -> Any:
            """The active rules for a branch (any reader may list them), as GitHub gives
            them: one item per rule and ruleset."""
            contexts = self.rulesets.get((repo.full_name.lower(), request.path_params["branch"]))
            if contexts is None:
                return []
            return [{"type": "required_status_checks", "ruleset_source_type": "Repository",
                     "ruleset_source": repo.full_name, "ruleset_id": 1,
                     "parameters": {"strict_required_status_checks_policy": False,
                                    "required_status_checks": [{"context": c}
                                                               for c in contexts]}}]

        async def logs(request: Request, repo: Repo) -> Any:
            """Like GitHub: a redirect to a short-lived download URL of the plain text log."""
            token = secrets.token_urlsafe(16)
            self.downloads[token] = self._job(request).log
            return RedirectResponse(f"{sim.base_url}/_sim/job-logs/{token}", status_code=302)

        async def download(request: Request) -> Response:
            text = self.downloads.pop(request.path_params["token"], None)
            if text is None:
                return PlainTextResponse("expired", status_code=410)
            return PlainTextResponse(text)

        table: list[tuple[str, str, Callable[[Request, Repo], Awaitable[Any]]]] = [
            ("/repos/{owner}/{repo}/commits/{ref:path}/check-runs", "checks", list_runs),
            ("/repos/{owner}/{repo}/commits/{ref:path}/check-suites", "checks", list_suites),
            ("/repos/{owner}/{repo}/check-runs/{id:int}/annotations", "checks", annotations),
            ("/repos/{owner}/{repo}/check-runs/{id:int}", "checks", get_run),
            ("/repos/{owner}/{repo}/actions/jobs/{job_id}/logs", "actions", logs),
            ("/repos/{owner}/{repo}/actions/jobs/{job_id}", "actions", get_job),
            ("/repos/{owner}/{repo}/commits/{ref:path}/status", "statuses", combined),
            ("/repos/{owner}/{repo}/branches/{branch:path}/protection/required_status_checks",
             "administration", required),
            ("/repos/{owner}/{repo}/rules/branches/{branch:path}", "metadata", rules),
        ]
        out = []
        for path, permission, fn in table:
            endpoint = sim.endpoint(authed(permission, fn))
            out += [Route(path, endpoint, methods=["GET"]),
                    Route("/api/v3" + path, endpoint, methods=["GET"])]
        out.append(Route("/_sim/job-logs/{token}", download, methods=["GET"]))
        return out + self.control_routes()

    def control_routes(self) -> list[Route]:
        """The CI's script over HTTP, for a simulator run as a process (``/_sim/ci/...``)."""
        async def control(request: Request) -> Response:
            body = await request.json()
            what = request.path_params["what"]
            try:
                if what == "script":
                    self.script(body["repo"], body["checks"], body.get("branch"))
                elif what == "protect":
                    self.protect(body["repo"], body["branch"], body["contexts"])
                elif what == "run":
                    self.run_branch(body["repo"], body["branch"])
                elif what == "rerun":
                    self.rerun(body["repo"], int(body["suite_id"]))
                else:
                    return JSONResponse({"message": f"no such CI control: {what}"}, 404)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"message": f"bad control request: {exc!r}"}, 400)
            except GitHubError as exc:
                return exc.response()
            return JSONResponse({"ok": True}, 201)

        return [Route("/_sim/ci/{what}", control, methods=["POST"])]

    def _job(self, request: Request) -> Job:
        try:
            job = self.jobs.get(int(request.path_params["job_id"]))
        except ValueError:
            job = None
        if job is None:
            raise GitHubError(404, "Not Found")
        return job
