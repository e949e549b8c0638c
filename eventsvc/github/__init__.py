"""GitHub access for triggers and commands: REST client, App auth, git operations, YAML edits.

Only this package talks to the GitHub REST API and runs `git`.
"""

from __future__ import annotations

from eventsvc.github.client import (
    GitHubApiError,
    GitHubClient,
    GitHubRetryableError,
    GitHubSettings,
)

__all__ = [
    "GitHubApiError",
    "GitHubClient",
    "GitHubRetryableError",
    "GitHubSettings",
]
