"""The Prefect `Flow` every audiobatch flow is: Prefect's own, minus one import on each run."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import Flow
from pydantic_core import PydanticSerializationError, to_jsonable_python


class AudiobatchFlow(Flow):
    """Parameters go to the API as JSON through pydantic, not FastAPI's `jsonable_encoder`:
    Prefect imports FastAPI (~0.2 s, a tenth of a one-clip run's own overhead) just for that
    call. Our parameters are strings and pydantic option groups, which both encode alike."""

    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        return {key: serialized(value) for key, value in parameters.items()}


def serialized(value: Any) -> Any:
    """A parameter as the API stores it; one that is not JSON is kept as its type's name, as
    Prefect does, rather than failing the run."""
    try:
        return to_jsonable_python(value)
    except (PydanticSerializationError, TypeError, ValueError, RecursionError):
        return f"<{type(value).__name__}>"


def audiobatch_flow(**settings: Any) -> Callable[[Callable[..., Any]], AudiobatchFlow]:
    """`@audiobatch_flow(name=...)` is `@prefect.flow(name=...)` building an `AudiobatchFlow`."""
    return partial(AudiobatchFlow, **settings)
