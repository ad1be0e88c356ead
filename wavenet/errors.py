"""User errors: bad input that the CLI reports in one line, without a traceback."""


class UserError(ValueError):
    """Something the user can fix; the message names the file or key and what to do."""
