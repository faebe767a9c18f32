"""Reading a commit's checks: other Apps' check runs and annotations, commit statuses, Actions
job logs and the base branch's required checks, with a token that may read them and no more."""

from __future__ import annotations

from typing import Any

from bot.github.client import GitHubApiError, RepoClient

# What reading CI results needs (README: an existing App adds `actions` and `statuses` read).
CI_PERMISSIONS = {"checks": "read", "actions": "read", "statuses": "read", "contents": "read",
                  "metadata": "read"}
LOG_BYTES = 5_000_000

class ChecksClient(RepoClient):
    """A repository's CI results, read with a token of ``CI_PERMISSIONS``; with the job's own
    token where the installation has not granted those yet (an App registered before them:
    check runs are read, job logs and statuses are not)."""

    narrow = True

    async def token(self, fresh: bool = False) -> str:
        if self.narrow:
            try:
                return await self.app.installation_token(self.installation_id, self.name,
                                                         fresh, CI_PERMISSIONS)
            except GitHubApiError as exc:
                if exc.status != 422:
                    raise
                self.narrow = False  # "not granted to this installation"
        return await super().token(fresh)

    async def check_runs(self, ref: str) -> list[dict[str, Any]]:
        """The latest check run of each check on a commit, every App's."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            data = await self.request("GET", f"/commits/{ref}/check-runs",
                                      params={"per_page": 100, "page": page,
                                              "filter": "latest"})
            out += data.get("check_runs", [])
            if len(out) >= int(data.get("total_count", 0)) or not data.get("check_runs"):
                return out
            page += 1

    async def annotations(self, run_id: int) -> list[dict[str, Any]]:
        """A check run's annotations (the first 100: more are not shown to the agent)."""
        return list(await self.request("GET", f"/check-runs/{run_id}/annotations",
                                       params={"per_page": 100}) or [])

    async def statuses(self, ref: str) -> list[dict[str, Any]]:
        """The latest commit status of each context on a commit."""
        data = await self.request("GET", f"/commits/{ref}/status", params={"per_page": 100})
        return list((data or {}).get("statuses", []))

    async def job_log(self, job_id: int) -> str:
        """An Actions job's plain text log (GitHub answers with a redirect to a download URL,
        which is followed without the token)."""
        url = f"/repos/{self.full_name}/actions/jobs/{job_id}/logs"

        async def send(headers: dict[str, str]) -> Any:
            return await self.app.rest.arequest("GET", url, headers=headers)

        resp = await self.call(f"GET {url}", send)
        return bytes(resp.content[-LOG_BYTES:]).decode("utf-8", "replace")

    async def required_checks(self, branch: str) -> list[str] | None:
        """The checks ``branch`` requires (None: nothing names any): classic branch
        protection's and the "require status checks" rules of the rulesets that cover it."""
        names = await self._protected_checks(branch)
        for name in await self._ruleset_checks(branch):
            if name not in names:
                names.append(name)
        return names or None

    async def _protected_checks(self, branch: str) -> list[str]:
        """Classic branch protection's required checks: read from the protection itself
        where the App may (administration read), else from what any reader of the branch
        sees of it."""
        try:
            data = await self.request(
                "GET", f"/branches/{branch}/protection/required_status_checks")
        except GitHubApiError as exc:
            if exc.status == 404:
                return []
            if exc.status != 403:
                raise
            branch_data = await self.request("GET", f"/branches/{branch}")
            data = ((branch_data or {}).get("protection") or {}).get(
                "required_status_checks") or {}
        names = [str(c) for c in data.get("contexts") or []]
        names += [str(c.get("context")) for c in data.get("checks") or []
                  if c.get("context") and c.get("context") not in names]
        return names

    async def _ruleset_checks(self, branch: str) -> list[str]:
        """The checks the rulesets covering ``branch`` require (rules for a branch are
        readable with metadata access; a GHES without rulesets answers 404)."""
        try:
            rules = await self.request("GET", f"/rules/branches/{branch}")
        except GitHubApiError as exc:
            if exc.status in (403, 404):
                return []
            raise
        return [str(check["context"]) for rule in rules or []
                if rule.get("type") == "required_status_checks"
                for check in (rule.get("parameters") or {}).get("required_status_checks") or []
                if check.get("context")]
