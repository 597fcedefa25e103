"""The errors and warnings deconflict raises on purpose.

Every error a user can trigger with bad input (an unknown method name, an invalid parameter, a
missing dataset, a NaN loss, ...) is a :class:`DeconflictError` whose message names the problem and
what to do about it. Command-line entry points print that message on one line and exit with status 2
instead of showing a stack trace.
"""

from __future__ import annotations


class DeconflictError(Exception):
    """Base class of the errors deconflict raises for bad input or an impossible request."""


class ConfigError(DeconflictError, ValueError):
    """A parameter file or a parameter value is invalid (unknown profile, bad device, ...)."""


class UnknownNameError(DeconflictError, KeyError):
    """A name that is not registered (a method, model, dataset, task, ...). The message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownMethodError(UnknownNameError):
    """A method name that is not registered. The message lists the valid names."""


class InvalidHyperparameterError(DeconflictError, ValueError):
    """A method hyperparameter is out of range or of the wrong kind."""


class ShapeError(DeconflictError, ValueError):
    """A tensor does not have the shape a function needs."""


class NonFiniteError(DeconflictError, FloatingPointError):
    """A loss, a gradient or a Jacobian contains NaN or Inf."""


class SolverError(DeconflictError, RuntimeError):
    """A numerical solver inside a method did not reach a valid solution."""


class DatasetError(DeconflictError, ValueError):
    """A dataset does not have the expected layout or content (a missing folder, a corrupt file)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset root or a dataset is missing."""


class CheckpointError(DeconflictError, RuntimeError):
    """A checkpoint cannot be read or does not match the run it should resume."""


class DeconflictWarning(UserWarning):
    """Base class of deconflict's warnings: something was degraded, loudly rather than silently."""


class SolverWarning(DeconflictWarning):
    """A solver failed on one step and the method fell back to a documented behaviour."""
