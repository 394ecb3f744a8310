"""The assessor web console: a Starlette app over a ``consolelib.Console``, served by uvicorn.

``create_app(cfg, console=None)`` builds the app; at start-up it restores the room model from the
console store (``Room.restore``), starts the console and a task that folds every delivered batch
into the model. The page (``index.html`` + ``app.js``, no build step) polls compact JSON every
400 ms (>= 2 updates/s); every view is rebuilt from the server's state, so a browser reload or a
console restart (state from the store) loses nothing.

HTTP API (JSON; errors are ``{"error": text}`` with 400 bad input, 404 unknown station,
502 the station refused or did not answer):

- ``GET /api/room``: assessor, and one card per station.
- ``GET /api/station/{id}?window=last5|session``: card + timeline lanes + contacts + marks.
- ``GET /api/station/{id}/board``: the 19 competences, figures, rule, each assessor's verdict.
- ``POST /api/station/{id}/mark`` ``{competence, kind: observed|not_observed|note|counter|
  consensus_observed|consensus_not_observed, text, age_ms}``; ``POST .../contact`` ``{action: start|end, kind: phone|chat|email}``;
  ``POST .../exam`` ``{action: assign|start|end, candidate_id, candidate_name}``. ``age_ms`` = how
  long ago the assessor clicked (the browser's measure); the action is stamped on the station
  clock at that moment through the console's clock-offset estimate.
- ``GET /report/{id}.html|.json|.csv?session=``: the candidate report (``reports.py``).
- ``GET /api/session``: this browser's session (created on first call, cookie
  ``station_console_<port>``): ``{csrf, assessor, logins}``; ``POST /api/login``
  ``{assessor_id, password}``, ``POST /api/logout``.

Security (``security.py``): Host header checked; every POST needs JSON, the page's own Origin and
the session's CSRF token (header ``X-CSRF-Token``); a Content-Security-Policy without inline
script on every answer; with ``[[console.assessor]]`` logins every API call needs a logged-in
session, and commands go with that assessor's key. Listens on ``console.http_host`` (default
127.0.0.1); any other address is refused unless TLS (``tls_cert_file``/``tls_key_file``) and
logins are configured. Every text from stations or assessors is inserted into the page as text
(never as HTML). POST bodies above 64 KiB are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from station import protocol
from station.competences import COMPETENCE_IDS, COMPETENCES, MARK_KINDS, MAX_TEXT, CommandError
from station.console.follower import Console
from station.console import passwords
from station.console.anchor_book import AnchorBook
from station.console.web import reports
from station.console.web.security import Guard, Sessions, allowed_hosts, cookie_name
from station.console.web.state import NS_PER_MS, Room

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
MAX_BODY = 64 * 1024
MAX_AGE_MS = 10_000
COMMAND_TIMEOUT_S = 5.0


class BadInput(Exception):
    pass


def _err(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


class WebConsole:
    """The console, its room model and the request handlers."""

    def __init__(self, cfg, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(cfg)
        self.room = Room(cfg, list(self.console.links), self.console)
        self.pump_task: asyncio.Task | None = None
        self.started_wall = time.time()
        self.stats = {"batches": 0, "messages": 0, "apply_ns_total": 0, "apply_ns_max": 0, "requests": 0}
        self.sessions = Sessions()
        self.logins = {a["id"]: a for a in cfg.console.assessor}   # assessor id -> [[console.assessor]]
        self.https = bool(cfg.console.tls_cert_file)
        self.commander = None           # per-assessor command keys (logins only); see commander.py
        if self.logins:                 # here, not at start-up: a bad key file is a clear error
            from station.console.commander import Commander
            self.commander = Commander(cfg, self.console.specs)
        self._login_failures: dict[str, list[float]] = {}
        self.guard_counts: dict | None = None   # the Guard's refusals (create_app)
        self.book: AnchorBook | None = None     # countersigned exam-end anchors (startup)

    # ----------------------------------------------------------------- life cycle
    async def startup(self) -> None:
        n = self.room.restore(self.console.reader)
        log.info("web console: restored %d messages from %s", n, self.console.store_path)
        self.book = AnchorBook(self.console.store_path, self.cfg, self.cfg.console.assessor_id)
        for sid in self.room.stations:     # anchors stored before a restart are countersigned too
            for s in self.console.reader.sessions(sid):
                self._countersign(self.console.reader.messages(sid, s["session"], kinds=("anchor",)))
        self.console.start()
        self.pump_task = asyncio.create_task(self._pump())

    async def shutdown(self) -> None:
        if self.pump_task:
            self.pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.pump_task
        await asyncio.get_running_loop().run_in_executor(None, self.console.stop)
        if self.commander is not None:
            self.commander.close()
        if self.book is not None:
            self.book.close()

    async def _pump(self) -> None:
        while True:
            try:
                batch = await self.console.apoll(1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the model die of one batch
                log.exception("web console: polling the console failed")
                await asyncio.sleep(0.2)
                continue
            if not batch:
                if not self.console._running:
                    return
                continue
            t0 = time.perf_counter_ns()
            try:
                self.room.apply(batch)
            except Exception:
                log.exception("web console: applying a batch failed")
            found = [m for m in batch if m.kind == "anchor"]
            if found:
                await asyncio.get_running_loop().run_in_executor(None, self._countersign, found)
            dt = time.perf_counter_ns() - t0
            s = self.stats
            s["batches"] += 1
            s["messages"] += len(batch)
            s["apply_ns_total"] += dt
            s["apply_ns_max"] = max(s["apply_ns_max"], dt)

    # ----------------------------------------------------------------- helpers
    def _station(self, request: Request) -> str:
        sid = request.path_params["sid"]
        if sid not in self.room.stations:
            raise KeyError(sid)
        return sid

    async def _body(self, request: Request) -> dict:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise BadInput(f"request body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise BadInput("request body is not JSON") from None
        if not isinstance(body, dict):
            raise BadInput("request body must be a JSON object")
        return body

    def _station_t(self, sid: str, body: dict) -> int:
        """Station-clock ns of the assessor's click (0 = let the station use its arrival time)."""
        age = body.get("age_ms", 0)
        if not isinstance(age, (int, float)) or isinstance(age, bool) or not 0 <= age <= MAX_AGE_MS:
            age = 0
        t = self.console.station_time(sid, time.monotonic_ns() - int(age * NS_PER_MS))
        return int(t or 0)

    async def _command(self, sid: str, cmd: dict, request: Request) -> JSONResponse:
        conn = self.room.conn(sid)
        if conn.get("state") in ("unauthorised", "refused"):
            return _err(502, f"station {sid} is {conn['state']}: {conn.get('detail', '')}; command not sent")
        try:
            if self.logins:      # shared console: the logged-in assessor's own key
                who = self.identity(request)["id"]
                loop = asyncio.get_running_loop()
                fut = loop.run_in_executor(None, lambda: self.commander.send(who, sid, cmd, COMMAND_TIMEOUT_S))
            else:
                fut = self.console.asend_command(sid, cmd, timeout=COMMAND_TIMEOUT_S)
            # the extra bound: a request dropped on reconnect would otherwise never resolve
            ack = await asyncio.wait_for(fut, COMMAND_TIMEOUT_S + 2)
        except protocol.ProtocolError as e:
            return _err(400, str(e))
        except CommandError as e:
            return _err(502, str(e))
        except asyncio.TimeoutError:
            return _err(502, f"station {sid} did not acknowledge the command in {COMMAND_TIMEOUT_S + 2:g} s")
        return JSONResponse({"ok": True, "ack": _jsonable(ack), "t_ns": cmd.get("t_ns")})

    def _countersign(self, msgs) -> None:
        """Countersign and keep the exam-end anchors among ``msgs`` (station/anchors.py)."""
        for m in msgs:
            try:
                if isinstance(m.data, dict) and self.book.add(m.station, m.session, m.data):
                    log.info("web console: countersigned the exam-end anchor of %s %s", m.station, m.session)
            except Exception:
                log.exception("web console: anchor of %s %s not kept", m.station, m.session)

    def identity(self, request: Request) -> dict:
        """Who is acting: the logged-in assessor, or (no logins) the console's configured one."""
        _, session = request.scope.get("station_session", (None, None))
        if self.logins:
            a = self.logins[session.assessor]
            return {"id": a["id"], "name": a["name"]}
        c = self.cfg.console
        return {"id": c.assessor_id, "name": c.assessor_name}

    def _set_cookie(self, request: Request, response: Response, sid: str) -> None:
        response.set_cookie(cookie_name(request.scope["server"][1]), sid, httponly=True, samesite="strict",
                            secure=self.https, path="/")

    async def api_session(self, request: Request) -> Response:
        sid, session = request.scope.get("station_session", (None, None))
        fresh = session is None
        if fresh:
            sid, session = self.sessions.new()
        who = None
        if session.assessor and session.assessor in self.logins:
            a = self.logins[session.assessor]
            who = {"id": a["id"], "name": a["name"]}
        elif not self.logins:
            who = {"id": self.cfg.console.assessor_id, "name": self.cfg.console.assessor_name}
        r = JSONResponse({"csrf": session.csrf, "assessor": who, "logins": bool(self.logins),
                          "assessors": [{"id": a["id"], "name": a["name"]} for a in self.logins.values()]},
                         headers={"Cache-Control": "no-store"})
        if fresh:
            self._set_cookie(request, r, sid)
        return r

    async def api_login(self, request: Request) -> Response:
        if not self.logins:
            raise BadInput("this console has no logins ([[console.assessor]] is not configured)")
        body = await self._body(request)
        aid, pw = body.get("assessor_id"), body.get("password")
        if not isinstance(aid, str) or not isinstance(pw, str):
            raise BadInput("assessor_id and password (text) are required")
        now = time.monotonic()
        recent = [t for t in self._login_failures.get(aid, []) if now - t < 60]
        if len(recent) >= 5:
            return _err(429, "too many failed logins for this assessor; wait a minute")
        a = self.logins.get(aid)
        loop = asyncio.get_running_loop()
        ok = a is not None and await loop.run_in_executor(None, passwords.verify, pw, a["password_hash"])
        if not ok:
            if a is not None:               # bounded: only configured assessors are tracked
                self._login_failures[aid] = recent + [now]
            return _err(401, "wrong assessor or password")
        self._login_failures.pop(aid, None)
        old, _ = request.scope.get("station_session", (None, None))
        self.sessions.drop(old)                      # a new id at login: no session fixation
        sid, session = self.sessions.new(aid)
        r = JSONResponse({"ok": True, "csrf": session.csrf, "assessor": {"id": a["id"], "name": a["name"]}})
        self._set_cookie(request, r, sid)
        return r

    async def api_logout(self, request: Request) -> Response:
        old, _ = request.scope.get("station_session", (None, None))
        self.sessions.drop(old)
        sid, session = self.sessions.new()
        r = JSONResponse({"ok": True, "csrf": session.csrf})
        self._set_cookie(request, r, sid)
        return r

    # ----------------------------------------------------------------- handlers
    async def index(self, request: Request) -> Response:
        return FileResponse(HERE / "index.html", headers={"Cache-Control": "no-store"})

    async def asset(self, request: Request) -> Response:
        name = request.url.path.lstrip("/")
        kind = "application/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(HERE / name, media_type=kind, headers={"Cache-Control": "no-store"})

    async def api_room(self, request: Request) -> Response:
        self.stats["requests"] += 1
        cards = [self.room.card(sid) for sid in self.room.stations]
        return JSONResponse({"assessor": self.identity(request),
                             "server_time": time.time(), "applied": self.room.applied, "stations": cards,
                             "competences": [{"id": i, "group": g, "title": t} for i, g, t in COMPETENCES]})

    async def api_station(self, request: Request) -> Response:
        self.stats["requests"] += 1
        sid = self._station(request)
        window = request.query_params.get("window", "last5")
        if window not in ("last5", "session"):
            raise BadInput("window must be last5 or session")
        d = self.room.detail(sid, window)
        d["board"] = self.room.board(sid, self.identity(request))
        return JSONResponse(_jsonable(d))

    async def api_board(self, request: Request) -> Response:
        return JSONResponse(_jsonable(self.room.board(self._station(request), self.identity(request))))

    async def api_mark(self, request: Request) -> Response:
        sid = self._station(request)
        body = await self._body(request)
        comp = body.get("competence")
        kind = body.get("kind")
        text = body.get("text", "")
        if comp not in COMPETENCE_IDS:
            raise BadInput(f"unknown competence {str(comp)[:20]!r}; allowed: {', '.join(COMPETENCE_IDS)}")
        if kind not in MARK_KINDS:
            raise BadInput(f"kind must be one of {', '.join(MARK_KINDS)}")
        if not isinstance(text, str):
            raise BadInput("text must be a string")
        if len(text) > MAX_TEXT:
            raise BadInput(f"note is {len(text)} characters long; at most {MAX_TEXT} are allowed")
        if kind == "counter" and comp not in ("C1", "C2", "C3"):
            raise BadInput("counters exist for C1, C2 and C3 only")
        cmd = {"type": "mark", "competence": comp, "kind": kind, "text": text, "mark_id": uuid.uuid4().hex,
               "t_ns": self._station_t(sid, body)}
        resp = await self._command(sid, cmd, request)
        if resp.status_code == 200:   # journaled: the assessor sees their own mark at once
            ack = json.loads(resp.body)["ack"]
            t = ack.get("t_ns") if isinstance(ack, dict) else None
            me = self.identity(request)
            self.room.stations[sid].acknowledged_mark(dict(cmd, assessor_id=me["id"], assessor_name=me["name"],
                                                           t_ns=t if isinstance(t, int) else cmd["t_ns"]))
        return resp

    async def api_contact(self, request: Request) -> Response:
        sid = self._station(request)
        body = await self._body(request)
        if body.get("action") not in ("start", "end"):
            raise BadInput("action must be start or end")
        if body.get("kind") not in ("phone", "chat", "email"):
            raise BadInput("kind must be phone, chat or email")
        cmd = {"type": "contact", "action": body["action"], "kind": body["kind"],
               "contact_ref": str(body.get("contact_ref", ""))[:100], "t_ns": self._station_t(sid, body)}
        return await self._command(sid, cmd, request)

    async def api_exam(self, request: Request) -> Response:
        sid = self._station(request)
        body = await self._body(request)
        act = body.get("action")
        if act not in ("assign", "start", "end"):
            raise BadInput("action must be assign, start or end")
        cmd = {"type": "exam", "action": act}
        if act == "assign":
            cid, name = body.get("candidate_id", ""), body.get("candidate_name", "")
            if not isinstance(cid, str) or not isinstance(name, str) or not cid.strip():
                raise BadInput("candidate_id (text, not empty) and candidate_name (text) are required")
            if len(cid) > 64 or len(name) > 200:
                raise BadInput("candidate_id is at most 64 characters and candidate_name at most 200")
            cmd.update(candidate_id=cid.strip(), candidate_name=name.strip())
        return await self._command(sid, cmd, request)

    async def report(self, request: Request) -> Response:
        sid = self._station(request)
        fmt = request.path_params["fmt"]
        session = request.query_params.get("session") or None
        conn = self.room.conn(sid)
        loop = asyncio.get_running_loop()
        rep = await loop.run_in_executor(None, lambda: reports.build(self.console.reader, self.cfg, sid, session, conn,
                                                                     self.book))
        name = f"report-{rep['candidate']['id'] or sid}-{rep['session']['id']}"
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        if fmt == "html":
            return HTMLResponse(reports.render_html(rep))
        if fmt == "json":
            return JSONResponse(_jsonable(rep), headers={"Content-Disposition": f'inline; filename="{name}.json"'})
        if fmt == "csv":
            return Response(reports.render_csv(rep), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
        raise BadInput("report format must be html, json or csv")

    async def api_stats(self, request: Request) -> Response:
        s = dict(self.stats)
        s["console"] = self.console.stats()
        s["room"] = {"applied": self.room.applied, "ignored": self.room.ignored, "unknown": self.room.unknown}
        s["refused"] = dict(self.guard_counts) if self.guard_counts is not None else {}
        return JSONResponse(s)


def _jsonable(o):
    """JSON-safe copy: bytes become hex, tuples lists, non-finite floats None."""
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, float) and o != o:
        return None
    return o


def create_app(cfg, console: Console | None = None) -> Starlette:
    wc = WebConsole(cfg, console)

    def guard(handler):
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except KeyError as e:
                return _err(404, f"unknown station or session: {str(e.args[0] if e.args else e)[:100]}")
            except BadInput as e:
                return _err(400, str(e))
            except Exception as e:  # a bug must not take the console down
                log.exception("web console: %s %s failed", request.method, request.url.path)
                return _err(500, f"internal error: {type(e).__name__}")
        return run

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await wc.startup()
        try:
            yield
        finally:
            await wc.shutdown()

    routes = [
        Route("/", guard(wc.index)),
        Route("/api/session", guard(wc.api_session)),
        Route("/api/login", guard(wc.api_login), methods=["POST"]),
        Route("/api/logout", guard(wc.api_logout), methods=["POST"]),
        Route("/api/room", guard(wc.api_room)),
        Route("/api/stats", guard(wc.api_stats)),
        Route("/api/station/{sid}", guard(wc.api_station)),
        Route("/api/station/{sid}/board", guard(wc.api_board)),
        Route("/api/station/{sid}/mark", guard(wc.api_mark), methods=["POST"]),
        Route("/api/station/{sid}/contact", guard(wc.api_contact), methods=["POST"]),
        Route("/api/station/{sid}/exam", guard(wc.api_exam), methods=["POST"]),
        Route("/report/{sid}.{fmt}", guard(wc.report)),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/app.js", guard(wc.asset)),
        Route("/style.css", guard(wc.asset)),
    ]
    c = cfg.console
    counts: dict = {}
    wc.guard_counts = counts

    class CountingGuard(Guard):
        def __init__(self, app):
            super().__init__(app, hosts=allowed_hosts(c.http_host), https=wc.https, sessions=wc.sessions,
                             logins=bool(wc.logins))
            self.refused = counts
            counts.update({"host": 0, "content_type": 0, "origin": 0, "csrf": 0, "login": 0})

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(CountingGuard)])
    app.state.web = wc
    return app


def run_web(cfg, args=None) -> int:
    """``station console``: serve the web console until SIGINT/SIGTERM (or --duration)."""
    import uvicorn

    from station.errors import UserError
    if not cfg.console.station:
        raise UserError("no stations to follow: add [[console.station]] entries to the configuration", 2)
    c = cfg.console
    check_exposure(cfg)
    app = create_app(cfg)
    port = getattr(args, "port", None) or c.http_port
    tls = {"ssl_certfile": c.tls_cert_file, "ssl_keyfile": c.tls_key_file} if c.tls_cert_file else {}
    config = uvicorn.Config(app, host=c.http_host, port=port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=3, **tls)
    if tls:
        try:
            config.load()
        except (OSError, ValueError) as e:   # ssl.SSLError is an OSError
            raise UserError(f"console.tls_cert_file / tls_key_file: cannot load ({e})", 2) from None
    server = uvicorn.Server(config)
    duration = getattr(args, "duration", 0.0) or 0.0
    wc_ids = [a["id"] for a in c.assessor]

    import socket
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in c.http_host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((c.http_host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {c.http_host}:{port}: {e.strerror or e}", 2) from None

    async def main():
        if duration > 0:
            async def stopper():
                await asyncio.sleep(duration)
                server.should_exit = True
            asyncio.get_running_loop().create_task(stopper())
        who = f"logins: {', '.join(wc_ids)}" if wc_ids else f"assessor {c.assessor_id}"
        print(f"station console: {'https' if tls else 'http'}://{c.http_host}:{port}/ ({who})", flush=True)
        await server.serve(sockets=[sock])

    try:
        asyncio.run(main())
    finally:
        sock.close()
    return 0


def check_exposure(cfg) -> None:
    """Refuse (UserError) a web console on a non-loopback address without TLS and logins, a
    half-configured TLS pair, or a login whose password hash or key file is unusable."""
    from station.errors import UserError
    c = cfg.console
    if bool(c.tls_cert_file) != bool(c.tls_key_file):
        raise UserError("console.tls_cert_file and console.tls_key_file go together: set both or neither", 2)
    seen = set()
    for i, a in enumerate(c.assessor):
        if a["id"] in seen:
            raise UserError(f"console.assessor[{i}]: assessor {a['id']!r} listed twice", 2)
        seen.add(a["id"])
        try:
            passwords.check_format(a["password_hash"])
        except ValueError as e:
            raise UserError(f"console.assessor[{i}] ({a['id']}).password_hash: {e}", 2) from None
    if c.http_host.strip("[]") not in ("127.0.0.1", "::1", "localhost") and not c.http_host.startswith("127."):
        if not (c.tls_cert_file and c.assessor):
            raise UserError(f"console.http_host = {c.http_host!r} is not loopback: the web console is served "
                            "to the network only with TLS (console.tls_cert_file, tls_key_file) and assessor "
                            "logins ([[console.assessor]]); keep 127.0.0.1 otherwise", 2)
