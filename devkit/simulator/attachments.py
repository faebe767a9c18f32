"""Files people attach to issues and comments (screenshots), served as GitHub serves them at
``/user-attachments/assets/<id>``: a private repository's only with a token that may read its
issues (a 404 otherwise, as GitHub answers for what one may not see)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.simulator.state import GitHubError

if TYPE_CHECKING:
    from devkit.simulator.app import Simulator


@dataclass
class Attachment:
    repo: str
    data: bytes
    content_type: str


@dataclass
class Attachments:
    sim: Simulator
    items: dict[str, Attachment] = field(default_factory=dict)
    fetched: list[tuple[str, int]] = field(default_factory=list)  # (id, status), in order

    def add(self, repo: str, data: bytes, content_type: str = "image/png") -> str:
        """Attach ``data`` to ``repo``'s issues; returns the URL a Markdown image uses."""
        key = str(uuid.uuid4())
        self.items[key] = Attachment(repo, data, content_type)
        return f"{self.sim.base_url}/user-attachments/assets/{key}"

    async def serve(self, request: Request) -> Response:
        key = request.path_params["key"]
        item = self.items.get(key)
        try:
            if item is None:
                raise GitHubError(404, "Not Found")
            self.sim.check_token(request, self.sim.get_repo(item.repo), "issues", "read")
        except GitHubError as exc:
            self.fetched.append((key, exc.status))
            return Response("Not Found", 404)  # GitHub does not say what exists
        self.fetched.append((key, 200))
        return Response(item.data, 200, media_type=item.content_type)

    def routes(self) -> list[Route]:
        return [Route("/user-attachments/assets/{key}", self.serve, methods=["GET"])]
