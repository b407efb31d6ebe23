"""`voicecoach serve`: a local web coach for the phone on the floor beside the mat.

A Starlette app served by uvicorn. The page (package data in voicecoach/web: plain HTML,
CSS and JavaScript, nothing fetched from elsewhere) lists the bundled routines; choosing
one renders it exactly as `export --captions` does (export.write_session: a FLAC file with
chapters, and a WebVTT file), into the served-sessions folder under the data folder, with
the timeline beside it as JSON. A session is rendered once (a per-session job: a second
request for it waits on the first) and one render runs at a time (two cores, and the
phrase cache is shared). Played sessions are recorded in `play`'s history.

Routes, under /TOKEN/ when the server listens beyond this machine:

    GET  /                                 the page
    GET  /static/NAME                      its CSS and JavaScript
    GET  /api/routines                     routines, variations, levels, lengths, this week
    POST /api/sessions                     {routine, variation, level}: render (or find) it
    GET  /api/sessions/ID                  a session's state and rendering progress
    GET  /sessions/ID/audio.flac           its audio (HTTP Range, so the page can seek)
    GET  /sessions/ID/captions.vtt         its captions
    GET  /sessions/ID/timeline.json        its timeline: events, spans and sections
    POST /api/sessions/ID/history          {ended, played_s, stopped_at_step, position_s}: record it

Files are served only by session id, from the names this server gave them: no request
path ever becomes a file path, so nothing outside the folder (and nothing in it that the
server did not make) can be asked for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import UsageError, VoicecoachError
from .spec import LEVELS, Level, Options, SessionSpec, VoiceSettings
from .stops import asked_to_stop

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .model import Routine
    from .pipeline import Session

log = logging.getLogger("voicecoach.serve")

AUDIO_SUFFIX = ".flac"
"""FLAC, not MP3: after a jump, Chromium 156 plays the export's VBR MP3 from 0.4 s before to
1.35 s after where its clock says (8 jumps into a mid-back-knot session, heard through Web
Audio and found in the file by cross-correlation), so the exercise and caption shown would
be off from what is heard; the FLAC plays within 10 ms of it (the measurement's own
spread). It is twice the size (6.4 MB against 3.2 MB for 9 minutes), nothing on a local
network, and phone browsers play it (Chrome, Safari since iOS 11, Firefox)."""
AUDIO_NAME = "audio.flac"
FILES = {AUDIO_NAME: (AUDIO_SUFFIX, "audio/flac"),
         "captions.vtt": (".vtt", "text/vtt; charset=utf-8"),
         "timeline.json": (".json", "application/json")}
SESSION_ID = re.compile(r"[a-z0-9_-]{1,200}")
State = Literal["queued", "rendering", "ready", "failed"]


def served_dir() -> Path:
    """Where served sessions are kept: `served/` in voicecoach's data folder."""
    from .cache import user_dir

    return user_dir("data") / "served"


def new_token() -> str:
    """The access token for --lan: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


class NotFound(UsageError):
    """An unknown routine or variation: 404, and what is there."""


class Cancelled(Exception):
    """The server is stopping: a render in progress gives up (its temporary file goes)."""


@dataclass
class Job:
    """One session: rendered once, then served by its id until the server stops."""

    id: str
    spec: SessionSpec
    routine: Routine
    variation_title: str
    folder: Path
    state: State = "queued"
    stage: str = "Waiting for another session to finish rendering"
    done: int = 0
    total: int = 0
    error: str = ""
    timeline: dict[str, Any] = field(default_factory=dict)
    thread: threading.Thread | None = None

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.id}{suffix}"

    def status(self) -> dict[str, Any]:
        base = f"sessions/{self.id}/"
        return {"id": self.id, "routine": self.routine.id, "title": self.routine.title,
                "variation": self.spec.variation, "variation_title": self.variation_title,
                "level": self.spec.options.level, "state": self.state, "stage": self.stage,
                "progress": self.done / self.total if self.total else 0.0, "error": self.error,
                "audio": base + AUDIO_NAME, "captions": base + "captions.vtt",
                "timeline": base + "timeline.json"}


def session_json(session: Session, variation_title: str) -> dict[str, Any]:
    """`show --json`'s timeline (events, spans, voice) with the exercises' sections and
    titles, for the page."""
    from .pipeline import describe_voice

    timeline = session.timeline
    sr = timeline.sample_rate
    return {**timeline.to_json(), "title": timeline.title, "variation_title": variation_title,
            "sections": [{"title": s.title, "start": round(s.start / sr, 6),
                          "end": round(s.end / sr, 6)} for s in timeline.sections],
            "voice": describe_voice(session.spec.voice)}


class WebCoach:
    """The server's state: the routines it offers, and its sessions by id."""

    def __init__(self, folder: Path, voice: VoiceSettings) -> None:
        self.folder = folder
        self.voice = voice
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._render_lock = threading.Lock()  # one render at a time
        self._routines: dict[str, Routine] | None = None
        self._catalogue: list[dict[str, Any]] | None = None
        self._catalogue_lock = threading.Lock()
        self._routines_lock = threading.Lock()
        self.stopping = threading.Event()
        self.renders = 0
        self.warming: threading.Thread | None = None
        """Sessions rendered by this server (a session found on disk is not rendered again)."""

    # --- what is offered ----------------------------------------------------------------

    def routines(self) -> dict[str, Routine]:
        """The bundled routines by id, loaded once."""
        with self._routines_lock:
            if self._routines is None:
                from .load import iter_bundled

                self._routines = {r.id: r for r in iter_bundled()}
            return self._routines

    def catalogue(self) -> list[dict[str, Any]]:
        """Every bundled routine with its variations and each one's length at each level
        (worked out once: a cold phrase cache makes the speech first)."""
        routines = self.routines()
        with self._catalogue_lock:
            if self._catalogue is None:
                self._catalogue = [{
                    "id": r.id, "title": r.title, "description": " ".join(r.description.split()),
                    "variations": [{"name": v.name, "title": v.title, "default": v.default,
                                    "lengths": self._lengths(r, v.name)} for v in r.variations],
                } for r in routines.values()]
            catalogue = self._catalogue
        return [{**r, "week": self.week(r["id"])} for r in catalogue]

    def _lengths(self, routine: Routine, variation: str) -> dict[str, float]:
        from .pipeline import prepare

        lengths: dict[str, float] = {}
        for level in LEVELS:
            if self.stopping.is_set():
                raise Cancelled
            session = prepare(routine, variation, Options(level), self.voice)
            lengths[level] = round(session.timeline.duration_s, 1)
        return lengths

    def warm(self) -> None:
        """Work the catalogue out ahead of the first request (its errors wait for it)."""
        try:
            self.catalogue()
        except (VoicecoachError, Cancelled):
            pass

    def week(self, routine_id: str) -> dict[str, Any]:
        """This week's sessions of a routine against its dosage, from `play`'s history."""
        from .history import HistoryError, Target, sessions, summarize

        routine = self.routines()[routine_id]
        target = Target.from_amount(routine.dosage.sessions_per_week if routine.dosage else None)
        try:
            entries = sessions(routine_id)
        except HistoryError as e:
            return {"sessions": None, "target": None, "text": f"History unreadable: {e}"}
        count = summarize(entries, routine_id, routine.title, target, datetime.now(UTC),
                          weeks=1).this_week.sessions
        text = f"This week: {count} session{'' if count == 1 else 's'}"
        if target is not None:
            text += f", of {str(target).replace('-', ' to ')}"
        return {"sessions": count, "target": target.to_json() if target else None, "text": text}

    # --- sessions -----------------------------------------------------------------------

    def spec_for(self, routine_id: object, variation: object, level: object) -> tuple[SessionSpec, str]:
        """The session a request asks for, or UsageError naming what was wrong."""
        from .errors import did_you_mean

        routines = self.routines()
        if not isinstance(routine_id, str) or routine_id not in routines:
            raise NotFound(f"unknown routine {json.dumps(routine_id)}: "
                             f"{did_you_mean(str(routine_id), routines, cutoff=0.5)}"
                             f"valid: {', '.join(routines)}")
        routine = routines[routine_id]
        names = routine.variation_names
        if variation is None:
            variation = routine.default_variation
        if not isinstance(variation, str) or variation not in names:
            raise NotFound(f"unknown variation {json.dumps(variation)} of {routine_id}: "
                             f"{did_you_mean(str(variation), names)}valid: {', '.join(names)}")
        if level is None:
            level = "middle"
        if level not in LEVELS:
            raise UsageError(f"unknown level {json.dumps(level)}: valid: {', '.join(LEVELS)}")
        chosen: Level = level  # checked just above
        title = next(v.title for v in routine.variations if v.name == variation)
        return SessionSpec(routine, variation, Options(chosen), self.voice), title

    def session_id(self, spec: SessionSpec) -> str:
        """Names a rendering by everything that makes its bytes: the routine's content,
        the options, the voice and voicecoach's version, so a cached file is reused only
        for the same session."""
        from . import __version__

        assert not isinstance(spec.routine, str)
        digest = hashlib.sha256(repr((__version__, spec)).encode()).hexdigest()[:16]
        return f"{spec.routine.id}-{spec.variation}-{spec.options.level}-{digest}"

    def start(self, spec: SessionSpec, variation_title: str) -> Job:
        """The job for a session: a known one, one whose files a previous run made, or a
        new render in the background."""
        session_id = self.session_id(spec)
        with self._jobs_lock:
            job = self._jobs.get(session_id)
            if job is not None and job.state != "failed":
                return job
            assert not isinstance(spec.routine, str)
            job = Job(session_id, spec, spec.routine, variation_title, self.folder)
            self._jobs[session_id] = job
            if self._load_rendered(job):
                return job
            job.thread = threading.Thread(target=self._render, args=(job,),
                                          name=f"render {session_id}", daemon=True)
            job.thread.start()
            return job

    def job(self, session_id: str) -> Job | None:
        with self._jobs_lock:
            return self._jobs.get(session_id)

    def _load_rendered(self, job: Job) -> bool:
        """A session an earlier run rendered: its timeline is written last, so its being
        there (and reading back) means the audio and captions are whole."""
        try:
            if not all(job.path(suffix).is_file() for suffix, _ in FILES.values()):
                return False
            job.timeline = json.loads(job.path(".json").read_text())
        except (OSError, ValueError):
            return False
        job.state, job.stage = "ready", "Ready"
        return True

    @contextmanager
    def _progress(self, job: Job, total: int, label: str) -> Iterator[Callable[[int], None]]:
        shown = "Rendering the audio" if label.startswith("Rendering") else label
        job.stage, job.done, job.total = shown, 0, total

        def update(n: int) -> None:
            job.done += n
            if self.stopping.is_set() and label.startswith("Rendering"):
                raise Cancelled  # between two chunks: the export's temporary file is removed

        yield update

    def _render(self, job: Job) -> None:
        from .export import write_session
        from .files import make_folder, write_atomically
        from .pipeline import open_session

        try:
            with self._render_lock:
                if self.stopping.is_set():
                    raise Cancelled
                job.state, job.stage = "rendering", "Preparing the session"
                self.renders += 1
                session = open_session(job.spec, progress=lambda total, label: self._progress(
                    job, total, label))
                make_folder(self.folder)
                write_session(session, job.path(AUDIO_SUFFIX), captions=True,
                              progress=lambda total, label: self._progress(job, total, label))
                timeline = session_json(session, job.variation_title)
                write_atomically(job.path(".json"), json.dumps(timeline, ensure_ascii=False)
                                 .encode())
                job.timeline = timeline
                job.state, job.stage = "ready", "Ready"
        except Cancelled:
            job.state, job.stage, job.error = "failed", "Stopped", "the server is stopping"
        except VoicecoachError as e:
            job.state, job.stage, job.error = "failed", "Failed", str(e)
        except Exception as e:  # a bug: the page says so, the log has the traceback
            log.exception("rendering %s failed", job.id)
            job.state, job.stage, job.error = "failed", "Failed", f"internal error: {e}"

    def stop(self) -> None:
        """Stop rendering (a render in progress removes its temporary file) and wait, and
        stop working out the routines' lengths (before the interpreter's own shutdown
        pulls the threads they speak with from under them)."""
        self.stopping.set()
        with self._jobs_lock:
            threads = [j.thread for j in self._jobs.values() if j.thread is not None]
        for thread in [*threads, *([self.warming] if self.warming else [])]:
            thread.join(timeout=30)

    def record(self, job: Job, body: object) -> dict[str, Any]:
        """Record a played session in the history, as `play` does; returns this week."""
        from .history import SessionEntry, Target, record

        if not isinstance(body, dict):
            raise UsageError('expected a JSON object like {"ended": "completed", "played_s": 312}')
        ended = body.get("ended")
        if ended not in ("completed", "stopped"):
            raise UsageError(f"ended: expected 'completed' or 'stopped', got {json.dumps(ended)}")
        played = body.get("played_s")
        if isinstance(played, bool) or not isinstance(played, int | float) \
                or not math.isfinite(played) or played < 0:
            raise UsageError(f"played_s: expected seconds played, 0 or more, got "
                             f"{json.dumps(played)}")
        planned_s = float(job.timeline["duration"])
        played_s = min(float(played), planned_s)
        titles = [s["title"] for s in job.timeline["sections"]]
        step = body.get("stopped_at_step")
        if ended == "completed":
            step = None
        elif step not in titles:
            step = None
        position = body.get("position_s")  # where the audio stopped, as play's status line
        percent = None
        if ended == "stopped" and isinstance(position, int | float) \
                and not isinstance(position, bool) and math.isfinite(position):
            percent = 100 * min(max(float(position), 0.0), planned_s) / max(planned_s, 1e-9)
        now = datetime.now(UTC)
        warning = record(SessionEntry(
            routine_id=job.routine.id, routine_title=job.routine.title,
            variation=str(job.spec.variation), level=job.spec.options.level,
            started_at=now - timedelta(seconds=played_s), played_s=played_s, ended=ended,
            stopped_at_step=step, planned_s=planned_s, stopped_at_percent=percent,
            target=Target.of(job.routine)))
        week = self.week(job.routine.id)
        if warning:
            week["warning"] = str(warning)
        return week


# --- the app -----------------------------------------------------------------------------

def _error(status: int, message: str) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> object:
    """The request's JSON body. JSON only: a cross-site form cannot send that without the
    browser asking first, which this server never allows."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UsageError("expected a JSON body (Content-Type: application/json)")
    try:
        return json.loads(await request.body())
    except ValueError as e:
        raise UsageError(f"the body is not JSON: {e}") from None


def create_app(coach: WebCoach, token: str | None = None) -> Starlette:
    """The web app over `coach`; with a token, every request's path must start /TOKEN/."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    web = StaticFiles(packages=[("voicecoach", "web")])

    async def index(request: Request) -> Response:
        return await web.get_response("index.html", request.scope)

    async def routines(request: Request) -> Response:
        try:
            return JSONResponse({"routines": await run_in_threadpool(coach.catalogue)})
        except VoicecoachError as e:  # no voice to measure the sessions with, say
            return _error(503, str(e))
        except Cancelled:
            return _error(503, "the server is stopping")

    async def new_session(request: Request) -> Response:
        try:
            body = await _body(request)
            if not isinstance(body, dict):
                raise UsageError('expected a JSON object like {"routine": "mid-back-knot", '
                                 '"variation": "wall", "level": "middle"}')
            spec, title = await run_in_threadpool(coach.spec_for, body.get("routine"),
                                                  body.get("variation"), body.get("level"))
        except UsageError as e:
            return _error(404 if isinstance(e, NotFound) else 400, str(e))
        job = await run_in_threadpool(coach.start, spec, title)
        return JSONResponse(job.status(), status_code=202 if job.state != "ready" else 200)

    def find(request: Request) -> Job | Response:
        session_id = request.path_params["id"]
        job = coach.job(session_id) if SESSION_ID.fullmatch(session_id) else None
        if job is None:
            return _error(404, f"no session {json.dumps(session_id)} here: start one from the page")
        return job

    async def session_status(request: Request) -> Response:
        job = find(request)
        return job if not isinstance(job, Job) else JSONResponse(job.status())

    async def session_file(request: Request) -> Response:
        job = find(request)
        if not isinstance(job, Job):
            return job
        name = request.path_params["name"]
        if name not in FILES:
            return _error(404, f"no file {json.dumps(name)}: valid: {', '.join(FILES)}")
        if job.state != "ready":
            return _error(409, f"session {job.id} is not ready yet ({job.stage})")
        suffix, media_type = FILES[name]
        return FileResponse(job.path(suffix), media_type=media_type,
                            headers={"Cache-Control": "no-cache"})

    async def history(request: Request) -> Response:
        job = find(request)
        if not isinstance(job, Job):
            return job
        if job.state != "ready":
            return _error(409, f"session {job.id} is not ready yet ({job.stage})")
        try:
            week = await run_in_threadpool(coach.record, job, await _body(request))
        except UsageError as e:
            return _error(400, str(e))
        return JSONResponse(week)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        # the routines' lengths, worked out while the phone is being found (a cold phrase
        # cache with the neural voice takes a while); a failure is told to the page
        coach.warming = threading.Thread(target=coach.warm, name="routine lengths")
        coach.warming.start()
        yield
        await run_in_threadpool(coach.stop)

    middleware = [Middleware(Guard, token=token)]
    return Starlette(routes=[
        Route("/", index),
        Mount("/static", app=web, name="static"),
        Route("/api/routines", routines),
        Route("/api/sessions", new_session, methods=["POST"]),
        Route("/api/sessions/{id}", session_status),
        Route("/api/sessions/{id}/history", history, methods=["POST"]),
        Route("/sessions/{id}/{name}", session_file),
    ], middleware=middleware, lifespan=lifespan)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class Guard:
    """Who may ask. With a token (on the network) a request's path must begin /TOKEN/ (checked
    in constant time), else 403; the app sees the path after it. Without one (this machine
    only) the Host must be this machine's, so a web page elsewhere cannot reach the server
    through a DNS name it points here. Every answer keeps its address out of Referer."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.datastructures import Headers, MutableHeaders
        from starlette.responses import PlainTextResponse, RedirectResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.token is None:
            host = Headers(scope=scope).get("host", "").rsplit(":", 1)[0].lower()
            if host not in LOOPBACK_HOSTS:
                await PlainTextResponse(f"Forbidden: this server answers as localhost, not as "
                                        f"{host!r}", status_code=403)(scope, receive, send)
                return
        else:
            given, slash, _ = path[1:].partition("/")
            if not secrets.compare_digest(given.encode(), self.token.encode()):
                await PlainTextResponse("Forbidden: use the address voicecoach serve printed, "
                                        "token included", status_code=403)(scope, receive, send)
                return
            prefix = f"/{given}"
            if not slash:  # /TOKEN: the page's relative addresses need /TOKEN/
                await RedirectResponse(prefix + "/")(scope, receive, send)
                return
            scope = {**scope, "root_path": scope.get("root_path", "") + prefix}

        async def send_private(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_private)


# --- listening ---------------------------------------------------------------------------

def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address[:2], family=family)
    except OSError as e:
        import errno
        import os

        hint = ": pick another --port, or 0 for any free one" if e.errno == errno.EADDRINUSE else ""
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise VoicecoachError(f"cannot listen on {host} port {port}: {reason.lower()}{hint}") \
            from None


def lan_address() -> str:
    """This machine's address on the local network: the one a packet out would leave from
    (nothing is sent: connecting a UDP socket only picks the route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def address(sock: socket.socket, host: str, token: str | None) -> str:
    """The address to open: the LAN address when listening on every interface."""
    port = sock.getsockname()[1]
    shown = lan_address() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"{token}/" if token else "")


def run(app: Starlette, sock: socket.socket) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn finishes the requests in flight, then the
    app's shutdown stops any render, whose temporary file goes)."""
    import uvicorn

    # a request still working after 5 s (the routines' lengths on a cold cache) is cut short,
    # so Ctrl-C never waits on it
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def stop() -> None:  # as uvicorn's own handler, which is only in place once it is serving
        server.force_exit = server.should_exit  # a second Ctrl-C: now
        server.should_exit = True

    with asked_to_stop(stop):
        server.run(sockets=[sock])
