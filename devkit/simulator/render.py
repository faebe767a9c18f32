"""JSON bodies in GitHub's shapes, built from GitHub's own examples with the simulator's state."""

from __future__ import annotations

import time
from typing import Any

from devkit.simulator.git import behind, mergeable, rev_parse
from devkit.simulator.openapi import Spec
from devkit.simulator.state import CheckRun, Comment, Issue, Repo, Review, ReviewComment, User


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def association(repo: Repo, user: User) -> str:
    """GitHub's ``author_association`` of a user with a repository."""
    if user.login == repo.owner:
        return "OWNER"
    return "COLLABORATOR" if user.login in repo.collaborators else "NONE"


class Renderer:
    """Turns state into response bodies and webhook payload parts."""

    def __init__(self, spec: Spec, base: str) -> None:
        self.spec, self.base = spec, base

    def user(self, user: User) -> dict[str, Any]:
        body = self.spec.example("issue")["user"]
        body.update(login=user.login, id=user.id, type=user.type,
                    html_url=f"{self.base}/{user.login}", url=f"{self.base}/users/{user.login}")
        return dict(body)

    def private_user(self, user: User) -> dict[str, Any]:
        """``GET /user``: the signed-in person, their private view."""
        body = self.spec.example("private-user-response-with-public-and-private-profile-"
                                 "information")
        body.update(self.user(user), name=user.login, email=None, company=None, bio=None,
                    user_view_type="private")
        return dict(body)

    def repo(self, repo: Repo) -> dict[str, Any]:
        body = self.spec.example("full-repository-default-response")
        owner = body["owner"]
        owner.update(login=repo.owner, html_url=f"{self.base}/{repo.owner}")
        body.update(
            id=repo.id, name=repo.name, full_name=repo.full_name, private=repo.private,
            default_branch=repo.default_branch, archived=repo.archived,
            html_url=f"{self.base}/{repo.full_name}", url=f"{self.base}/repos/{repo.full_name}",
            clone_url=f"{self.base}/{repo.full_name}.git",
            git_url=f"git://simulator/{repo.full_name}.git", language=None,
        )
        for key in ("template_repository", "parent", "source", "organization"):
            body.pop(key, None)
        return dict(body)

    def label(self, name: str) -> dict[str, Any]:
        body = self.spec.example("label-items")[0]
        body.update(name=name, id=abs(hash(name)) % 10**9, description=None, default=False)
        return dict(body)

    def issue(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        body = self.spec.example("issue")
        body.pop("pinned_comment", None)
        url = f"{self.base}/repos/{repo.full_name}/issues/{issue.number}"
        body.update(
            id=issue.id, number=issue.number, title=issue.title, body=issue.body,
            state=issue.state, user=self.user(issue.user), url=url,
            html_url=f"{self.base}/{repo.full_name}/issues/{issue.number}",
            labels=[self.label(name) for name in issue.labels], comments=len(issue.comments),
            created_at=iso(issue.created_at), updated_at=iso(time.time()),
            closed_at=None, closed_by=None, assignee=None, assignees=[], milestone=None,
            author_association="OWNER" if issue.user.login == repo.owner else "CONTRIBUTOR",
            state_reason=None, locked=False,
            repository_url=f"{self.base}/repos/{repo.full_name}",
        )
        if issue.pull is None:
            body.pop("pull_request", None)
        else:
            body["pull_request"] = {"url": url.replace("/issues/", "/pulls/"),
                                    "html_url": body["html_url"].replace("/issues/", "/pull/"),
                                    "diff_url": None, "patch_url": None}
        return dict(body)

    def comment(self, repo: Repo, issue: Issue, comment: Comment) -> dict[str, Any]:
        body = self.spec.example("issue-comment")
        body.pop("pin", None)
        body.update(
            id=comment.id, body=comment.body, user=self.user(comment.user),
            url=f"{self.base}/repos/{repo.full_name}/issues/comments/{comment.id}",
            html_url=f"{self.base}/{repo.full_name}/issues/{issue.number}#issuecomment-"
                     f"{comment.id}",
            issue_url=f"{self.base}/repos/{repo.full_name}/issues/{issue.number}",
            created_at=iso(comment.created_at), updated_at=iso(comment.updated_at),
            author_association="MEMBER",
        )
        return dict(body)

    def reaction(self, user: User, content: str) -> dict[str, Any]:
        body = self.spec.example("reaction")
        body.update(content=content, user=self.user(user))
        return dict(body)

    def pull(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        assert issue.pull is not None
        pull = issue.pull
        body = self.spec.example("pull-request")
        head_sha = rev_parse(repo.path, pull.head) or "0" * 40
        base_sha = rev_parse(repo.path, pull.base) or "0" * 40
        repo_json = self.repo(repo)
        body["head"].update(ref=pull.head, sha=head_sha, label=f"{repo.owner}:{pull.head}",
                            repo=repo_json, user=self.user(User(repo.owner)))
        body["base"].update(ref=pull.base, sha=base_sha, label=f"{repo.owner}:{pull.base}",
                            repo=repo_json, user=self.user(User(repo.owner)))
        html = f"{self.base}/{repo.full_name}/pull/{issue.number}"
        body.update(
            id=issue.id, number=issue.number, title=issue.title, body=issue.body,
            state=issue.state, draft=pull.draft, merged=pull.merged, user=self.user(issue.user),
            html_url=html, url=f"{self.base}/repos/{repo.full_name}/pulls/{issue.number}",
            labels=[self.label(n) for n in issue.labels], created_at=iso(issue.created_at),
            updated_at=iso(time.time()), closed_at=None, merged_at=None, merge_commit_sha=None,
            assignee=None, assignees=[], requested_reviewers=[], requested_teams=[],
            milestone=None, comments=len(issue.comments), review_comments=len(
                pull.review_comments), auto_merge=None, merged_by=None,
            **self.mergeability(repo, issue),
        )
        return dict(body)

    @staticmethod
    def mergeability(repo: Repo, issue: Issue) -> dict[str, Any]:
        """``mergeable`` and ``mergeable_state`` as GitHub computes them: ``dirty`` when the
        head conflicts with the base, ``behind`` when the base moved on cleanly, else
        ``clean`` (a merged or closed PR: ``None`` and ``unknown``)."""
        pull = issue.pull
        assert pull is not None
        if pull.merged or issue.state != "open":
            return {"mergeable": None, "mergeable_state": "unknown"}
        if not mergeable(repo.path, pull.base, pull.head):
            return {"mergeable": False, "mergeable_state": "dirty"}
        return {"mergeable": True,
                "mergeable_state": "behind" if behind(repo.path, pull.base, pull.head)
                else "clean"}

    def review(self, repo: Repo, number: int, review: Review) -> dict[str, Any]:
        body = self.spec.example("pull-request-review-items")[0]
        body.update(id=review.id, user=self.user(review.user), body=review.body,
                    state=review.state.upper(), submitted_at=iso(review.submitted_at),
                    html_url=f"{self.base}/{repo.full_name}/pull/{number}#pullrequestreview-"
                             f"{review.id}",
                    pull_request_url=f"{self.base}/repos/{repo.full_name}/pulls/{number}")
        return dict(body)

    def review_comment(self, repo: Repo, number: int, c: ReviewComment) -> dict[str, Any]:
        body = self.spec.example("pull-request-review-comment-items")[0]
        body.update(id=c.id, body=c.body, user=self.user(c.user), path=c.path, line=c.line,
                    original_line=c.line, in_reply_to_id=c.in_reply_to,
                    pull_request_review_id=c.review_id, diff_hunk=c.diff_hunk,
                    author_association=association(repo, c.user),
                    commit_id=c.commit_id or body["commit_id"],
                    original_commit_id=c.commit_id or body["original_commit_id"],
                    html_url=f"{self.base}/{repo.full_name}/pull/{number}#discussion_r{c.id}",
                    pull_request_url=f"{self.base}/repos/{repo.full_name}/pulls/{number}")
        if c.in_reply_to is None:
            body.pop("in_reply_to_id", None)
        return dict(body)

    def check_run(self, repo: Repo, run: CheckRun) -> dict[str, Any]:
        body = self.spec.example("check-run")
        output = {"title": None, "summary": None, "text": None, "annotations_count": 0,
                  "annotations_url": body["output"]["annotations_url"]}
        output.update({k: v for k, v in run.output.items() if k in ("title", "summary", "text")})
        body.update(id=run.id, name=run.name, head_sha=run.head_sha, status=run.status,
                    conclusion=run.conclusion, output=output, details_url=run.details_url,
                    external_id=run.external_id, pull_requests=self.pulls_at(repo, run.head_sha),
                    url=f"{self.base}/repos/{repo.full_name}/check-runs/{run.id}")
        return dict(body)

    def pulls_at(self, repo: Repo, sha: str) -> list[dict[str, Any]]:
        """The open pull requests whose head is ``sha``, as a check run lists them."""
        out = []
        for issue in repo.issues.values():
            pull = issue.pull
            if pull is None or issue.state != "open" or rev_parse(repo.path, pull.head) != sha:
                continue
            ref = {"id": repo.id, "name": repo.name,
                   "url": f"{self.base}/repos/{repo.full_name}"}
            out.append({"id": issue.id, "number": issue.number,
                        "url": f"{self.base}/repos/{repo.full_name}/pulls/{issue.number}",
                        "head": {"ref": pull.head, "sha": sha, "repo": ref},
                        "base": {"ref": pull.base, "sha": rev_parse(repo.path, pull.base) or "",
                                 "repo": ref}})
        return out
