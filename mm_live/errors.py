"""User-facing errors.

Every bad input a user can give (missing or corrupt file, malformed line, bad config value, wrong
checkpoint) raises :class:`MMLiveError` with a one-line message that names the thing and the fix.
The CLI prints it as ``mm-live: error: ...`` and exits with code 2, without a traceback; anything
else that escapes a command is a bug, reported in one line with a crash log (docs/errors.md).
"""

from __future__ import annotations

_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


class MMLiveError(Exception):
    """An error caused by the user's input; its message is one line naming the thing and the fix."""

    exit_code = 2

    def __init__(self, message: str):
        message = str(message)
        if _WORKER_TRACEBACK in message:
            # torch's DataLoader re-raises a worker's exception as type(exc)("Caught ... Original
            # Traceback ...\n<module>.<Type>: <message>"): keep the original message only.
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if last.startswith(f"{type(self).__module__}.") and ": " in last else last
        # Keep messages on one line: users read them in a terminal, CI greps them.
        super().__init__(" ".join(message.split()))


class MediaError(MMLiveError):
    """A clip that is missing, empty, corrupt, or not a video."""


class CommentsError(MMLiveError):
    """A comments file that is missing or has malformed lines."""


class ConfigError(MMLiveError):
    """A config value that is missing, of the wrong type, or outside its allowed values."""


class DataError(MMLiveError):
    """A dataset/annotation/prediction file that is missing or malformed."""


class CheckpointError(MMLiveError):
    """A checkpoint that is missing, incomplete, or made for another model."""


class OutputError(MMLiveError):
    """An output path that cannot be written (a file where a folder is needed, no permission)."""
