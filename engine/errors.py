"""`InputError`: the error of bad input from a user (a file, a field, an option, a shape, a limit).

Its message names what is wrong and where, in one line; the command line prints it without a traceback.
Every other exception is a bug or an environment failure and keeps its traceback. Subclasses `ValueError`, so
code that catches `ValueError` keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, named in the message: "<file>:<line>: field 'x' must be ...", "--option: ...", ..."""
