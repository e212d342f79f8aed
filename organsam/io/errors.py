"""Errors raised while reading or writing medical images.

Every message names the file, says what is wrong and points to the fix, so that a command-line user can act
on it without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["VolumeFileNotFoundError", "VolumeReadError", "VolumeWriteError"]


class VolumeReadError(ValueError):
    """A file or folder could not be read as a CT/MR volume (or label map).

    Args:
        path: The file or folder that was being read.
        problem: What is wrong with it.
        fix: What the user can do about it.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)


class VolumeFileNotFoundError(VolumeReadError, FileNotFoundError):
    """The path given to a reader does not exist (both a ``ValueError`` and a ``FileNotFoundError``)."""


class VolumeWriteError(ValueError):
    """A result could not be written (for example it would overwrite the input image).

    Args:
        path: The output path.
        problem: What is wrong.
        fix: What the user can do about it.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        message = f"{where}{problem}"
        if fix:
            message += f" Fix: {fix}"
        super().__init__(message)
