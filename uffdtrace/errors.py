"""Errors meant for the user: printed as one line, never as a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing privilege or feature).

    The CLI prints ``uffdtrace: <message>`` and exits with ``exit_code``.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
