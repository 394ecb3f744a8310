"""Errors an operator can act on. The command line prints their message (no traceback) and exits
with ``exit_code``: 2 for bad configuration or usage, 3 for a bad or foreign journal, 1 otherwise."""


class UserError(Exception):
    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class JournalError(UserError):
    """A journal that is missing, corrupt, truncated, tampered with or from a newer version."""

    exit_code = 3
