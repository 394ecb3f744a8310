"""What keeps the web console safe inside an assessor's browser (docs/console.md, "Security").

``Guard`` is an ASGI middleware in front of every route:

- **Host**: the ``Host`` header must name a loopback host (``localhost``, ``127.0.0.1``, ``::1``)
  or the configured ``console.http_host``; anything else is answered 403 (DNS rebinding: a
  foreign name that resolves to this machine cannot read rooms or reports).
- **State-changing requests** (every method but GET and HEAD, OPTIONS included) need all of:
  ``Content-Type: application/json``, an ``Origin`` equal to the page's own origin
  (``http[s]://<Host>``), a session cookie, and the session's CSRF token in ``X-CSRF-Token``.
  A cross-site form or ``fetch`` fails at least two of these; each refusal is a 403 with
  ``{"error": ..., "code": "csrf"|"origin"|"content_type"|"host"}``, and the handler never runs.
- **Login** (when ``[[console.assessor]]`` is configured): every API and report path needs a
  session logged in as one of them (401 ``code = "login"`` otherwise); the page, its script and
  style, ``/api/session`` and ``/api/login`` are open.
- **Headers** on every answer: a Content-Security-Policy without inline or foreign script, no
  framing, ``nosniff``, no referrer, same-origin resource and opener policies, HSTS over TLS.

``Sessions`` keeps the browser sessions in memory (a restarted console forgets them: the page
asks for a new one, and with logins the assessor logs in again). A session is
``{csrf, assessor (id or None), created_ns, seen_ns}``; it expires after ``IDLE_S`` without use
and at most ``MAX_SESSIONS`` are kept (the oldest go first). Logging in replaces the session id
(no fixation).
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = ("GET", "HEAD")
IDLE_S = 12 * 3600
MAX_SESSIONS = 1000
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
OPEN_PATHS = ("/", "/app.js", "/style.css", "/favicon.ico", "/api/session", "/api/login")


def host_name(host_header: str) -> str:
    """The host part of a Host header, lower case, without port or IPv6 brackets."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else ""
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_hosts(http_host: str) -> frozenset[str]:
    """Loopback names plus the configured listen host (unless it is a wildcard address)."""
    names = set(LOOPBACK_NAMES)
    h = host_name(http_host) if http_host.count(":") <= 1 else http_host.strip("[]").lower()
    if h and h not in ("0.0.0.0", "::", "*"):
        names.add(h)
    return frozenset(names)


@dataclass
class Session:
    csrf: str
    assessor: str | None = None
    created_ns: int = field(default_factory=time.monotonic_ns)
    seen_ns: int = field(default_factory=time.monotonic_ns)


class Sessions:
    """Browser sessions by cookie value (thread-safe)."""

    def __init__(self, idle_s: float = IDLE_S, max_sessions: int = MAX_SESSIONS):
        self.idle_ns = int(idle_s * 1e9)
        self.max = max_sessions
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic_ns()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen_ns > self.idle_ns:
                del self._by_id[sid]
                return None
            s.seen_ns = now
            return s

    def new(self, assessor: str | None = None) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = Session(secrets.token_urlsafe(32), assessor)
        with self._lock:
            while len(self._by_id) >= self.max:
                oldest = min(self._by_id, key=lambda k: self._by_id[k].seen_ns)
                del self._by_id[oldest]
            self._by_id[sid] = s
        return sid, s

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def cookie_name(port: int) -> str:
    """Cookies are not kept apart by port: one name per console port."""
    return f"station_console_{port}"


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


class Guard:
    """ASGI middleware; see the module docstring. ``https``: the console serves TLS;
    ``logins``: assessor logins are configured."""

    def __init__(self, app, *, hosts: frozenset[str], https: bool, sessions: Sessions, logins: bool):
        self.app = app
        self.hosts = hosts
        self.https = https
        self.sessions = sessions
        self.logins = logins
        self.refused = {"host": 0, "content_type": 0, "origin": 0, "csrf": 0, "login": 0}
        extra = [(b"strict-transport-security", b"max-age=31536000")] if https else []
        self.headers = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                        (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                        (b"cross-origin-opener-policy", b"same-origin"),
                        (b"cross-origin-resource-policy", b"same-origin"), *extra]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        port = (scope.get("server") or ("", 0))[1] or 0
        sid = _cookie(headers, cookie_name(port))
        session = self.sessions.get(sid)
        scope["station_session"] = (sid if session else None, session)
        refusal = self._check(scope, headers, session)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + self.headers)
            await send(message)

        if refusal is not None:
            status, code, text = refusal
            self.refused[code] += 1
            body = json.dumps({"error": text, "code": code}).encode()
            await send_with_headers({"type": "http.response.start", "status": status,
                                     "headers": [(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def _check(self, scope, headers: dict[str, str], session: Session | None):
        host = headers.get("host", "")
        if host_name(host) not in self.hosts:
            return 403, "host", "this console answers only to its own host name"
        if scope["method"] not in SAFE_METHODS:
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return 403, "content_type", "state-changing requests must be JSON (Content-Type: application/json)"
            expected = f"{'https' if self.https else 'http'}://{host}"
            if headers.get("origin") != expected:
                return 403, "origin", "request from another origin refused"
            token = headers.get("x-csrf-token", "")
            if session is None or not token or not hmac.compare_digest(token, session.csrf):
                return 403, "csrf", "missing or wrong CSRF token; reload the page"
        if self.logins and scope["path"] not in OPEN_PATHS and (session is None or not session.assessor):
            return 401, "login", "log in first"
        return None
