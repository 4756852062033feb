"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2.

Anything else escaping a verb is a bug in facemark and keeps its traceback.
"""


class FacemarkError(Exception):
    """Base class: a problem with the user's input, named precisely enough to fix."""


class ConfigError(FacemarkError):
    """Unknown key, wrong type or bad value in a config file or a --set override."""


class DataError(FacemarkError):
    """A dataset file is missing, unreadable or inconsistent (the message names the file)."""


class ArtifactError(FacemarkError):
    """A checkpoint, exported model or manifest is missing, corrupt or does not match."""
