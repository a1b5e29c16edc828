"""Errors that mean "bad input", which the command line reports as one line (file and fix) with exit status 2."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2, no traceback."""
