"""The one exception type for mistakes a user can fix."""


class FaceganError(Exception):
    """A problem the user caused and can fix; the CLI prints it as one sentence, no traceback."""
