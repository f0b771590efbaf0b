"""Errors that end start-up with one line for the user instead of a traceback."""


def first_line(exc: BaseException) -> str:
    """An exception's message as one line for the user (its type when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DialobotError(Exception):
    """An error whose message is complete on its own; the CLI prints it as one line and exits."""


class ConfigError(DialobotError):
    """A bad configuration value; the message names the key."""


class ModelLoadError(DialobotError):
    """A model could not be loaded (not downloadable, not a model directory, ...)."""


class BackendUnavailable(DialobotError):
    """The configured backend's optional dependencies are not installed; the message names the extra."""


class GenerationUnavailable(DialobotError):
    """A remote model server did not answer usably (down, timing out, errors, garbage) after retries."""


class StorageError(DialobotError):
    """The database cannot be opened, read or written; the message names the setting and the cause."""
