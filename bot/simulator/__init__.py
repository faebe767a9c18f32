"""A local GitHub for tests and demos: REST, App auth, real git over HTTP, webhooks out."""

from bot.simulator.app import GitHubError, Simulator, generate_private_key
from bot.simulator.state import Fault

__all__ = ["Fault", "GitHubError", "Simulator", "generate_private_key"]
