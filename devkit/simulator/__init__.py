"""A local GitHub for tests and demos: REST, App auth, real git over HTTP, webhooks out."""

from devkit.simulator.app import Simulator, generate_private_key
from devkit.simulator.state import Fault, GitHubError

__all__ = ["Fault", "GitHubError", "Simulator", "generate_private_key"]
