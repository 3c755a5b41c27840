"""Errors the user can fix. The CLI prints their message, without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the file or field and what to change."""


class AgreedError(UserError):
    """Raised on every process of a distributed run with the same message (printed once)."""
