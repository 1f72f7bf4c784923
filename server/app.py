"""The FastAPI application factory: routes under /api/v1, one error handler for dynascope's
errors, a clear 422 for bad input, the dashboard's static files, and the stale-run reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

import dynascope.frontend
from dynascope.server import VERSION
from dynascope.server.api.routes import events, geometry, health, registry, runs, vendor
from dynascope.server.db.session import session_scope
from dynascope.server.errors import DynascopeError, InvalidSpecError
from dynascope.server.queue import make_celery
from dynascope.server.schemas.data_specs import DATA_SPECS
from dynascope.server.schemas.model_specs import MODEL_SPECS
from dynascope.server.schemas.optimizer_specs import OPTIMIZER_SPECS
from dynascope.server.services.runs import reap_stale_runs
from dynascope.server.services.workers import forget_stale_workers
from dynascope.server.settings import Settings, get_settings

log = logging.getLogger(__name__)
FRONTEND_DIR = Path(dynascope.frontend.__file__).resolve().parent


def _field_name(loc: tuple[Any, ...], error_type: str) -> str:
    """'model.widths.1' from ('body', 'model', 'mlp', 'widths', 1): the body prefix and the
    discriminator tag of a tagged union (model, data, optimizer) are not part of the name."""
    parts = [str(part) for part in loc if part != "body"]
    if len(parts) > 1 and parts[1] in _UNION_TAGS.get(parts[0], ()):
        del parts[1]
    if error_type in {"union_tag_invalid", "union_tag_not_found"}:
        parts.append("name")
    return ".".join(parts)


_UNION_TAGS = {
    "model": set(MODEL_SPECS),
    "data": set(DATA_SPECS),
    "optimizer": set(OPTIMIZER_SPECS),
}


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    detail = [
        {
            "field": _field_name(tuple(item["loc"]), item["type"]),
            "loc": list(item["loc"]),
            "msg": item["msg"],
            "type": item["type"],
        }
        for item in error.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


async def _dynascope_error(_request: Request, error: DynascopeError) -> JSONResponse:
    if isinstance(error, InvalidSpecError):  # 422s all look alike: a list naming the field
        field = error.field
        loc = ["body", *field.split(".")] if field else ["body"]
        item = {"field": field, "loc": loc, "msg": str(error), "type": "value_error"}
        return JSONResponse(status_code=error.status_code, content={"detail": [item]})
    return JSONResponse(status_code=error.status_code, content={"detail": str(error)})


async def _reap_forever(settings: Settings) -> None:
    def reap() -> list[int]:
        with session_scope() as session:
            # workers killed outright left their rows: forget them after ten timeouts
            forget_stale_workers(session, older_than_s=10 * settings.heartbeat_timeout_s)
            return reap_stale_runs(session, timeout_s=settings.heartbeat_timeout_s)

    while True:
        try:
            reaped = await run_in_threadpool(reap)
            if reaped:
                log.warning(
                    "marked runs %s failed: their worker stopped sending heartbeats", reaped
                )
        except Exception:
            log.exception("stale-run reaper failed; retrying")
        await asyncio.sleep(settings.reaper_interval_s)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The dynascope API (and dashboard) for ``settings`` (the environment's by default)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap_forever(settings))
        yield
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper

    app = FastAPI(title="dynascope", version=VERSION, lifespan=lifespan)
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(DynascopeError, _dynascope_error)  # type: ignore[arg-type]
    for module in (runs, geometry, registry, health, events):
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(vendor.router)
    app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="dashboard")
    return app
