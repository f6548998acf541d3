"""The HTTP face of `sequence serve`: a Starlette application (served by uvicorn) over a SourceHub.

  GET    /                      the class page: a tile per source, updating live
  GET    /student               a student's page: sends their camera, shows their own states
  GET    /sources               every source with its status and latest window line
  POST   /sources               {"url"}, {"device", "input_format"} or {"push": true} -> {"id"} (waiting
                                until its first frame, then running, ended or failed)
  GET    /sources/{id}          one source
  DELETE /sources/{id}          stop watching it
  PUT    /sources/{id}/stream   a push source's container stream, as a chunked upload
  WS     /sources/{id}/ws       the same as binary WebSocket messages (a browser's MediaRecorder)
  GET    /sources/{id}/events   server-sent events: `window` (the line `predict --live` prints), `end`
  GET    /events                every source's events in one stream (what the class page listens to)
  GET    /sources/{id}/history  its stored windows (?from=&to= seconds; CSV with Accept: text/csv)
  DELETE /students/{name}/history  erase everything stored under that name -> {"removed": rows}
  POST   /sessions              {"name"}: a class session starts; sources started from now belong to it
  GET    /sessions              every session kept
  GET    /sessions/{id}/report  its report page (.csv: one row per window; .png: the figure); id "current":
                                the session being recorded
  GET    /healthz               ok or degraded, the sources by status (no token needed: it names no one)
  GET    /metrics               Prometheus' text format (sequence.serve.metrics)

With a token every request must carry it: `Authorization: Bearer TOKEN`, or the cookie a page gets by
opening `/?token=TOKEN` once (a browser's EventSource and WebSocket cannot set headers).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sse_starlette.sse import AppStatus, EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from sequence.serve.history import as_csv
from sequence.serve.hub import ACTIVE, SourceError, SourceHub, check_spec
from sequence.serve.metrics import CONTENT_TYPE as METRICS_TYPE

PAGES = Path(__file__).with_name("pages")
COOKIE = "affectseq_token"
SNAPSHOT = 180  # recent lines per source a class page opened later draws its timelines from
PING_S = 15  # keep-alive comments on idle event streams (proxies close silent connections)


def create_app(make_hub: Callable[[], SourceHub], token: str | None = None) -> Starlette:
    """The application; `make_hub` is called on start-up, on the server's event loop."""
    # sse-starlette ends every event stream once a uvicorn server of this process has been told to
    # stop (a process-wide flag it sets then): a server started after another (a test, a notebook)
    # starts with it cleared.
    AppStatus.should_exit = False
    state: dict[str, SourceHub] = {}

    @asynccontextmanager
    async def lifespan(app):
        state["hub"] = make_hub()
        try:
            yield
        finally:
            state["hub"].close()

    def hub() -> SourceHub:
        return state["hub"]

    async def page(request: Request) -> Response:
        if token and request.query_params.get("token"):
            # The token link: keep it in a cookie and drop it from the address bar and history.
            response = RedirectResponse(request.url.remove_query_params("token"), status_code=303)
            response.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict")
            return response
        name = "student.html" if request.url.path.rstrip("/").endswith("student") else "class.html"
        return FileResponse(PAGES / name, headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return JSONResponse(hub().health())

    async def metrics(request: Request) -> Response:
        return Response(hub().metrics.text(), media_type=METRICS_TYPE)

    async def source_history(request: Request) -> Response:
        sid, query = request.path_params["id"], request.query_params
        try:
            bounds = [float(query[k]) if query.get(k) else None for k in ("from", "to")]
        except ValueError:
            raise SourceError("from and to are seconds from the source's start; fix: e.g. ?from=60&to=120") from None
        lines = await run_in_threadpool(hub().history.windows_of, sid, *bounds)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(as_csv(lines, hub().run.states), media_type="text/csv")
        return JSONResponse(lines)

    async def sessions(request: Request) -> Response:
        if request.method == "POST":
            try:
                name = str((await request.json())["name"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError):
                name = ""
            if not name:
                raise SourceError('the body must name the session, e.g. {"name": "Tuesday 10:00"}')
            return JSONResponse(await run_in_threadpool(hub().history.start_session, name[:200]), status_code=201)
        return JSONResponse(await run_in_threadpool(hub().history.sessions))

    async def session_report(request: Request) -> Response:
        from sequence.serve import report

        key, part = request.path_params["id"], request.path_params.get("part", "html")
        chosen = hub().history.session_id if key == "current" else int(key) if key.isdigit() else key
        try:
            session, rows = await run_in_threadpool(hub().history.session_windows, chosen)
        except KeyError:
            raise SourceError(f"no session {key!r}; fix: GET /sessions lists them", 404) from None
        states = hub().run.states
        if part == "csv":
            return Response(report.as_csv(session, rows, states), media_type="text/csv")
        png = await run_in_threadpool(report.as_png, session, rows, states)
        if part == "png":
            return Response(png, media_type="image/png")
        return HTMLResponse(report.as_html(session, rows, states, png=png))

    async def erase_student(request: Request) -> Response:
        removed = await run_in_threadpool(hub().history.erase, request.path_params["name"])
        return JSONResponse({"removed": removed})

    async def list_sources(request: Request) -> Response:
        return JSONResponse(hub().listing())

    async def add_source(request: Request) -> Response:
        try:
            spec = check_spec(await request.json())
        except json.JSONDecodeError:
            raise SourceError('the body must be JSON, e.g. {"push": true}') from None
        source = hub().add(spec)
        return JSONResponse({"id": source.id, **source.describe()}, status_code=201)

    async def one_source(request: Request) -> Response:
        sid = request.path_params["id"]
        if request.method == "DELETE":
            return JSONResponse(hub().remove(sid).describe())
        return JSONResponse(hub().get(sid).describe())

    async def push_stream(request: Request) -> Response:
        sid = request.path_params["id"]
        hub().get(sid)
        try:
            async for data in request.stream():
                if data:
                    await hub().push(sid, data)
        except (ClientDisconnect, BrokenPipeError):
            pass  # the client went, or the source was removed: the decoder sees the end either way
        finally:
            hub().push_ended(sid)
        return JSONResponse(hub().describe(sid))

    async def push_socket(websocket: WebSocket) -> None:
        sid = websocket.path_params["id"]
        if not hub().is_push(sid):
            await websocket.close(code=1008, reason="no such push source")
            return
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_bytes()
                await hub().push(sid, data)
        except (WebSocketDisconnect, BrokenPipeError, SourceError):
            pass
        finally:
            hub().push_ended(sid)

    async def events(request: Request) -> Response:
        sid = request.path_params.get("id")
        queue, leave = hub().subscribe(sid)
        first = hub().get(sid).describe() if sid else {"sources": hub().listing(recent=SNAPSHOT)}

        async def stream():
            try:
                yield {"event": "status" if sid else "sources", "data": json.dumps(first)}
                if sid and first["status"] not in ACTIVE:
                    yield {"event": "end", "data": json.dumps(first)}
                    return
                while True:
                    event = await queue.get()
                    data = event["data"] if sid else {"source": event["source"], **_wrapped(event)}
                    yield {"event": event["event"], "data": json.dumps(data)}
                    if sid and event["event"] == "end":
                        return
            finally:
                leave()

        return EventSourceResponse(stream(), ping=PING_S)

    routes = [
        Route("/", page),
        Route("/student", page),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/sources", list_sources, methods=["GET"]),
        Route("/sources", add_source, methods=["POST"]),
        Route("/sources/{id}", one_source, methods=["GET", "DELETE"]),
        Route("/sources/{id}/stream", push_stream, methods=["PUT", "POST"]),
        Route("/sources/{id}/events", events),
        Route("/sources/{id}/history", source_history),
        Route("/students/{name}/history", erase_student, methods=["DELETE"]),
        Route("/sessions", sessions, methods=["GET", "POST"]),
        Route("/sessions/{id}/report", session_report),
        Route("/sessions/{id}/report.{part:str}", session_report),
        Route("/events", events),
        WebSocketRoute("/sources/{id}/ws", push_socket),
        Mount("/static", StaticFiles(directory=PAGES)),
    ]

    async def refused(request: Request, exc: SourceError) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={SourceError: refused})
    return TokenGate(app, token) if token else app


def _wrapped(event: dict) -> dict:
    return {"line": event["data"], "counts": event["counts"]} if event["event"] == "window" else {"state": event["data"]}


class TokenGate:
    """Every request, page, API call, event stream or WebSocket, must carry the token: as a bearer
    header, as the cookie of a token link, or (the link itself) as ?token= on a page."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    def _holds(self, scope) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = []
        if headers.get("authorization", "").startswith("Bearer "):
            given.append(headers["authorization"][7:])
        for part in headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                given.append(value)
        if scope.get("path") in ("/", "/student"):
            query = scope.get("query_string", b"").decode("latin-1")
            given += [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "token"]
        return any(secrets.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def __call__(self, scope, receive, send: Callable[[dict], Awaitable[None]]) -> None:
        # /healthz answers anyone (a load balancer, a probe): it names no student and no address.
        if scope["type"] not in ("http", "websocket") or scope.get("path") == "/healthz" or self._holds(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "token required"})
            return
        response = JSONResponse(
            {"error": "this server needs its token; fix: send 'Authorization: Bearer TOKEN', or open /?token=TOKEN"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)
