"""eventsvc: event automation for GitOps teams."""

__version__ = "0.1.0"
