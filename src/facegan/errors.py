"""The exception type for mistakes a user can fix, the clean stop on a signal, and facegan's warnings."""


class FaceganError(Exception):
    """A problem the user caused and can fix; the CLI prints it as one sentence, no traceback."""


class Interrupted(FaceganError):
    """Training stopped by SIGTERM or SIGINT after writing a checkpoint; the CLI exits with 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class FaceganWarning(UserWarning):
    """Something the user should know that does not stop the work; the CLI prints it as `facegan: warning: ...`."""
