"""The one exception family for problems the user can fix (bad files, bad options).

The CLI prints these as ``error: <message>`` and exits with status 2, without a traceback.
Messages name the file, the field and what was expected.
"""

from __future__ import annotations


class RadistillError(Exception):
    """Base class of every user-facing error raised by radistill."""


class DatasetError(RadistillError):
    """A scene on disk is missing, malformed or inconsistent."""


class CheckpointError(RadistillError):
    """A checkpoint is truncated, foreign, or does not match its own config."""


class ConfigError(RadistillError):
    """An option or a combination of options is invalid (unknown kind, bad value)."""


class BackendError(RadistillError):
    """A requested compute backend (triton, gsplat, ...) is not available here."""
