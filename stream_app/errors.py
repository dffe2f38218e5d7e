"""One root exception for the project, with small subclasses."""


class StreamAppError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(StreamAppError):
    """A setting is invalid; the message names the setting and its environment variable."""


class SnapshotError(StreamAppError):
    """A model snapshot failed validation and was not loaded."""


class InputFileError(StreamAppError):
    """A file given on the command line cannot be read as the contract requires."""


class DependencyError(StreamAppError):
    """An installed dependency is not the version our patches of it were written against."""
