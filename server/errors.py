"""dynascope's one error hierarchy. Lower-layer errors are translated into these at the
service boundary; the API maps each to an HTTP status in one handler (``server/app.py``)."""

from __future__ import annotations


class DynascopeError(Exception):
    """Base of every error dynascope raises on purpose. ``status_code`` is its HTTP status."""

    status_code = 500


class NotFoundError(DynascopeError):
    """A resource (run, sweep, ...) does not exist."""

    status_code = 404


class ConflictError(DynascopeError):
    """The request is valid but not in the resource's current state (e.g. delete a running run)."""

    status_code = 409


class InvalidSpecError(DynascopeError):
    """A spec is well-formed but cannot be honoured (e.g. a limit only known at run time).
    ``field`` names the part of the request at fault, where there is one; the API answers
    with a 422 shaped like a validation error's (a list of ``{field, msg, ...}``)."""

    status_code = 422

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BrokerUnavailableError(DynascopeError):
    """The task broker could not be reached; nothing was queued."""

    status_code = 503
