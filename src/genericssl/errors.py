"""Errors the user can fix. The CLI prints their message, without a traceback."""


class UserError(Exception):
    """Bad input or configuration; the message names the file or field and what to change."""
