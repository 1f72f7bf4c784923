"""Shared pydantic base for everything a client sends: unknown keys are an error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from dynascope.server.settings import Limits, get_settings


class StrictModel(BaseModel):
    """A spec fragment: unknown keys are rejected (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def limits() -> Limits:
    """The configured limits a spec is checked against."""
    return get_settings().limits


def check_at_most(value: int, bound: int, what: str) -> int:
    """Reject ``value`` above the configured ``bound``, naming the setting to raise."""
    if value > bound:
        raise ValueError(f"{what} is {value}, above the configured limit of {bound}")
    return value


def field_error(
    model: str, loc: tuple[str | int, ...], message: str, value: object
) -> ValidationError:
    """A validation error located at ``loc`` (for cross-field checks in a model validator,
    so the 422 names the field at fault rather than the whole object)."""
    return ValidationError.from_exception_data(
        model,
        [
            InitErrorDetails(
                type=PydanticCustomError("spec", "{message}", {"message": message}),
                loc=loc,
                input=value,
            )
        ],
    )
