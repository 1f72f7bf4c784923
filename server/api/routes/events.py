"""Live progress as server-sent events (``text/event-stream``), for the dashboard.

- ``GET /runs/{id}/events``: one run. The first event is the run as it is now; then an
  ``event: run`` each time anything the API shows of it changes (status, step, summary,
  heartbeat, error); when it reaches a terminal status, one ``event: end`` carrying the final
  run, and the stream closes. ``event: deleted`` (and the stream closes) if the run is deleted.
  404 for an unknown run.
- ``GET /events``: every run. First ``event: run`` for each queued or running run, then one
  for each run that is created, moves or finishes, and ``event: deleted`` for a tracked run
  that disappears. The runs table holds this one stream instead of one per running run
  (browsers allow six HTTP/1.1 connections per host).

Each ``data:`` is the run's JSON exactly as ``GET /runs/{id}`` returns it. Comment lines
(``: heartbeat``) are sent while nothing changes. The server reads the database every
``POLL_INTERVAL_S`` in a worker thread (the event loop never blocks on the database), with a
short-lived session per read, so an idle stream holds no connection or transaction.

A stream is closed by the server after ``MAX_STREAM_S`` with ``retry:`` set low, and
``EventSource`` reconnects at once (receiving the current state first): this bounds how long
an open dashboard tab can hold up a graceful shutdown of the API, which waits for open
responses to finish.

Why no dependency (sse-starlette, or FastAPI's own ``fastapi.sse``, which needs a newer
FastAPI than we require): the wire format is a few lines (``event:``/``id:``/``data:``,
blank line), and a ``StreamingResponse`` over an async generator is all the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from dynascope.server.db.models import TERMINAL_STATUSES, Run
from dynascope.server.db.session import session_scope
from dynascope.server.errors import NotFoundError
from dynascope.server.schemas.runs import RunPublic
from dynascope.server.services import runs as runs_service

router = APIRouter(tags=["events"])

POLL_INTERVAL_S = 0.5
HEARTBEAT_INTERVAL_S = 5.0
MAX_STREAM_S = 15.0
RECONNECT_MS = 500
_ACTIVE = ("queued", "running")
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_message(event: str, data: str, event_id: int | None = None) -> bytes:
    """One server-sent event: ``event``, optional ``id``, and ``data`` (a JSON document, so
    one line) ended by a blank line."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def sse_comment(text: str) -> bytes:
    """A comment line, ignored by clients: keeps proxies and idle timeouts from closing."""
    return f": {text}\n\n".encode()


def _public_json(run: Run) -> str:
    return orjson.dumps(RunPublic.model_validate(run).model_dump(mode="json")).decode()


def read_run_json(run_id: int) -> str | None:
    """The run as ``GET /runs/{id}`` shows it, as JSON; None if it does not exist."""
    with session_scope() as session:
        try:
            run = runs_service.get_run(session, run_id=run_id)
        except NotFoundError:
            return None
        return _public_json(run)


def read_tracked_runs(tracked: Iterable[int], newer_than: int) -> tuple[dict[int, str], set[int]]:
    """JSON of every queued or running run, of every run with an id above ``newer_than``
    (created since the last read), and of each ``tracked`` id (runs seen active before, to
    see them finish); and which tracked ids no longer exist."""
    found: dict[int, str] = {}
    gone: set[int] = set()
    with session_scope() as session:
        for status in _ACTIVE:
            runs, _ = runs_service.list_runs(session, status=status, limit=1000)
            found |= {run.id: _public_json(run) for run in runs}
        newest, _ = runs_service.list_runs(session, limit=100)
        found |= {run.id: _public_json(run) for run in newest if run.id > newer_than}
        for run_id in set(tracked) - found.keys():
            try:
                found[run_id] = _public_json(runs_service.get_run(session, run_id=run_id))
            except NotFoundError:
                gone.add(run_id)
    return found, gone


def _is_terminal(run_json: str) -> bool:
    return orjson.loads(run_json)["status"] in TERMINAL_STATUSES


async def _disconnected(request: Request) -> bool:
    try:
        return await request.is_disconnected()
    except RuntimeError:  # the receive channel is already consumed by the response
        return False


class _StreamClock:
    """The pacing both streams share: a heartbeat comment when nothing has been sent for
    ``HEARTBEAT_INTERVAL_S``, the end of the stream after ``MAX_STREAM_S`` or once the client
    has gone, and ``POLL_INTERVAL_S`` between reads. Made when the stream starts."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = self.last_beat = time.monotonic()

    def heartbeat(self, now: float, *, sent: bool) -> bytes | None:
        """The heartbeat comment to send after a read at ``now``, if one is due: none when the
        read ``sent`` events (which count as a beat) or the last beat is recent."""
        if sent:
            self.last_beat = now
        elif now - self.last_beat >= HEARTBEAT_INTERVAL_S:
            self.last_beat = now
            return sse_comment("heartbeat")
        return None

    async def next_read(self, now: float) -> bool:
        """False when the stream is to end (open for ``MAX_STREAM_S`` by ``now``, or the
        client has disconnected); otherwise True, after waiting ``POLL_INTERVAL_S``."""
        if now - self.started >= MAX_STREAM_S or await _disconnected(self.request):
            return False
        await asyncio.sleep(POLL_INTERVAL_S)
        return True


async def run_event_stream(request: Request, run_id: int) -> AsyncIterator[bytes]:
    """The events of one run (see the module docstring)."""
    clock = _StreamClock(request)
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    sent: str | None = None
    event_id = 0
    while True:
        current = await run_in_threadpool(read_run_json, run_id)
        if current is None:
            yield sse_message("deleted", orjson.dumps({"id": run_id}).decode(), event_id + 1)
            return
        if _is_terminal(current):
            yield sse_message("end", current, event_id + 1)
            return
        now = time.monotonic()
        changed = current != sent
        if changed:
            sent, event_id = current, event_id + 1
            yield sse_message("run", current, event_id)
        if (heartbeat := clock.heartbeat(now, sent=changed)) is not None:
            yield heartbeat
        if not await clock.next_read(now):
            return


async def runs_event_stream(request: Request) -> AsyncIterator[bytes]:
    """The events of every run (see the module docstring)."""
    clock = _StreamClock(request)
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    sent: dict[int, str] = {}
    tracked: set[int] = set()
    newest = await run_in_threadpool(_newest_id)
    event_id = 0
    while True:
        found, gone = await run_in_threadpool(read_tracked_runs, tracked, newest)
        emitted = False
        for run_id in sorted(found):
            current = found[run_id]
            newest = max(newest, run_id)
            if sent.get(run_id) != current:
                sent[run_id], event_id, emitted = current, event_id + 1, True
                yield sse_message("run", current, event_id)
            if _is_terminal(current):
                tracked.discard(run_id)
                sent.pop(run_id, None)
            else:
                tracked.add(run_id)
        for run_id in sorted(gone):
            tracked.discard(run_id)
            sent.pop(run_id, None)
            event_id, emitted = event_id + 1, True
            yield sse_message("deleted", orjson.dumps({"id": run_id}).decode(), event_id)
        now = time.monotonic()
        if (heartbeat := clock.heartbeat(now, sent=emitted)) is not None:
            yield heartbeat
        if not await clock.next_read(now):
            return


def _newest_id() -> int:
    with session_scope() as session:
        runs, _ = runs_service.list_runs(session, limit=1)
        return runs[0].id if runs else 0


@router.get("/runs/{run_id}/events", response_class=StreamingResponse)
async def follow_run(run_id: int, request: Request) -> StreamingResponse:
    """Live progress of one run as server-sent events, until it finishes."""
    if await run_in_threadpool(read_run_json, run_id) is None:
        raise NotFoundError(f"run {run_id} does not exist")
    return StreamingResponse(
        run_event_stream(request, run_id), media_type="text/event-stream", headers=_HEADERS
    )


@router.get("/events", response_class=StreamingResponse)
async def follow_runs(request: Request) -> StreamingResponse:
    """Live changes of every run (created, progressing, finished, deleted) as server-sent
    events; the stream of the runs table."""
    return StreamingResponse(
        runs_event_stream(request), media_type="text/event-stream", headers=_HEADERS
    )
