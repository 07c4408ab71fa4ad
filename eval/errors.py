"""The one error type of the evaluation runner: a bad input or setting, with the fix in its message."""

from __future__ import annotations

__all__ = ["EvalError", "MethodFailure"]


class EvalError(ValueError):
    """A prompt set, method, option or output folder the runner cannot use; the message says what to change."""


class MethodFailure(RuntimeError):
    """One item failed in one method (a command exited non-zero or timed out); the run records it and goes on."""
