"""Errors the user can fix. The CLI prints their message, without a traceback."""
import re

# What torch's DataLoader puts around an exception raised in a worker process.
_WORKER_PREFIX = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_RAISED_LINE = re.compile(r"^[\w.]*\w+(Error|Exception): ", re.MULTILINE)


def worker_message(text: str) -> str:
    """The original message of an error a DataLoader worker raised, without torch's wrapper and
    the worker's traceback (unchanged when ``text`` is not such a message)."""
    if not _WORKER_PREFIX.match(text):
        return text
    last = None
    for last in _RAISED_LINE.finditer(text):
        pass
    return text[last.end():].strip() if last else text


class UserError(Exception):
    """Bad input or configuration; the message names the file or field and what to change.

    Raised in a DataLoader worker, it reaches the main process re-created from torch's
    wrapped text ("Caught UserError in DataLoader worker process 1. Original Traceback
    ..."); the constructor keeps only the original message, so a worker's error reads
    exactly as the main process's would.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str):
            args = (worker_message(args[0]),)
        super().__init__(*args)


class AgreedError(UserError):
    """Raised on every process of a distributed run with the same message (printed once)."""
