"""`InputError`: the error of bad input from a user (a file, a field, an option, a shape, a limit).

Its message names what is wrong and where, in one line; the command line prints it without a traceback.
Every other exception is a bug or an environment failure and keeps its traceback. Subclasses `ValueError`, so
code that catches `ValueError` keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, named in the message: "<file>:<line>: field 'x' must be ...", "--option: ...", ..."""


class CheckpointWriteError(InputError):
    """A checkpoint could not be written: the disk is full, a quota or file-size limit was hit, the file system
    is read-only, ... The message names the file and the cause in one line; whatever was at the checkpoint's path
    before is unchanged. `path` is the file or directory being written, `errno` the operating system's error
    number (None when unknown)."""

    def __init__(self, message: str, path: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno


class SplitTensorError(InputError):
    """A tensor held as several row blocks (it is over the adapter's max_storage_buffer_binding_size) reached an
    op that binds one buffer; the message names the tensor, the limit and, from the runtime, the kernel."""
