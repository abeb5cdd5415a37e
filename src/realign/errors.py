"""The one error a command's set-up raises below the CLI: the CLI prints it as `error: …` and
exits 2, before any work or run state (an unusable input, a bad option, a missing extra)."""

from __future__ import annotations


class UsageError(Exception):
    """The command cannot start as given; the message says why and what to do."""
