"""Handoff: turns GitHub issues into agent pull requests."""

__version__ = "0.1.0"
