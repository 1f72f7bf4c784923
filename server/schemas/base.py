"""Shared pydantic base for everything a client sends: unknown keys are an error."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from dynascope.server.settings import Limits, get_settings


class StrictModel(BaseModel):
    """A spec fragment: unknown keys are rejected (a typo must not be silently ignored), and
    no value is silently converted: an integer field takes only a JSON integer (not ``true``,
    ``16.0`` or ``"16"``), a float field a JSON number (an integer too, never a boolean or a
    string), a boolean only ``true`` or ``false`` (pydantic's strict mode, for every field,
    present and future); a float must be finite (Python's JSON reader accepts ``NaN`` and
    ``Infinity``), or the 422 says "Input should be a finite number"."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


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
