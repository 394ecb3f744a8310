"""Assessors are their keys; the web console is safe in a browser; a shared console has logins.

One demo station (``station run --sources scenario``, CURVE) that authorises the keys of anna and
bert (one console each) and of carla and dirk (who share one console with logins, whose own
stream key may only follow); real chromium for the browser attacks and the logins.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from pathlib import Path

import pytest
import zmq

from station import keys, protocol
from station.console.passwords import hash_password
from station.events import AssessorMark, ExamControl
from station.recorder.journal import Journal, list_sessions
from station.recorder.report import build_report
from station.rendering import render_html
from tests.support import free_port, require
from tests.web_harness import CHROMIUM, REPO, DemoStation, WebConsole, assessor_key, browser, station_cmd, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(300)]
PASSWORDS = {"carla": "carla-secret-1", "dirk": "dirk-secret-2"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    require(CHROMIUM)
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("secroom")
    st = DemoStation(root, "st-1", seed=3, speed=10.0,
                     assessors=[("anna", "Anna A."), ("bert", "Bert B."), ("carla", "Carla C."), ("dirk", "Dirk D.")],
                     readers=["shared"])
    logins = "".join(f"""
[[console.assessor]]
id = "{a}"
name = "{a.title()} C."
secret_key_file = "{assessor_key(root, a)}"
password_hash = "{hash_password(pw)}"
""" for a, pw in PASSWORDS.items())
    cons = []
    try:
        st.start()
        a = WebConsole(root, "anna", [st], "Anna A.", secret_key_file=assessor_key(root, "anna"))
        b = WebConsole(root, "bert", [st], "Bert B.", secret_key_file=assessor_key(root, "bert"))
        s = WebConsole(root, "shared", [st], "", secret_key_file=assessor_key(root, "shared"), extra=logins)
        cons = [a.start(), b.start(), s.start()]
        for c in (a, b):
            wait_for(lambda: c.get("/api/room")["stations"][0]["state"] == "connected", 30, f"{c.name} connected")
        yield {"root": root, "st": st, "a": a, "b": b, "s": s}
    finally:
        for c in cons:
            c.stop()
        st.stop()


def journal_path(st: DemoStation) -> Path:
    return list_sessions(st.root / "data")[-1].path


def journal_events(st: DemoStation, cls) -> list:
    with Journal.open(journal_path(st)) as j:
        return [e for b in j.iter_batches() for e in b.events(cls.STREAM)]


def send_raw_command(st: DemoStation, root: Path, key: str, cmd: dict) -> dict:
    """A command over CURVE with ``key``'s secret, exactly as given (the sender may lie)."""
    pub, sec = keys.load_secret(assessor_key(root, key))
    ctx = zmq.Context()
    try:
        d = ctx.socket(zmq.DEALER)
        d.linger = 0
        d.curve_serverkey = keys.load_public(st.station_key)
        d.curve_publickey, d.curve_secretkey = pub, sec
        d.connect(f"tcp://127.0.0.1:{st.req_port}")
        d.send_multipart(protocol.encode_request("command", 1, cmd=cmd))
        assert d.poll(15000), "no reply from the station"
        hdr, _ = protocol.decode_reply(d.recv_multipart())
        return hdr
    finally:
        ctx.destroy(linger=0)


def test_a_mark_is_journaled_as_the_key_that_sent_it(rig):
    st, root = rig["st"], rig["root"]
    fp = {n: keys.fingerprint(keys.load_public(Path(root) / "keys" / f"{n}.key")) for n in ("anna", "bert")}
    # anna's key claims to be bert
    lie = {"type": "mark", "cmd_id": "lie-1", "mark_id": "lie-1", "assessor_id": "bert", "assessor_name": "Bert B.",
           "competence": "C8", "kind": "observed", "text": "anna pretending", "t_ns": 0}
    hdr = send_raw_command(st, root, "anna", lie)
    assert hdr["ok"], hdr
    wait_for(lambda: any(m.mark_id == "lie-1" for m in journal_events(st, AssessorMark)), 15, "mark journaled")
    (m,) = [m for m in journal_events(st, AssessorMark) if m.mark_id == "lie-1"]
    assert (m.assessor_id, m.assessor_name, m.key_fp) == ("anna", "Anna A.", fp["anna"])
    # the same key again under another claimed id: still anna, so C8 is not proven
    hdr = send_raw_command(st, root, "anna", dict(lie, cmd_id="lie-2", mark_id="lie-2", assessor_id="carla"))
    assert hdr["ok"]
    wait_for(lambda: any(m.mark_id == "lie-2" for m in journal_events(st, AssessorMark)), 15, "second mark")
    assert {m.assessor_id for m in journal_events(st, AssessorMark) if m.mark_id.startswith("lie-")} == {"anna"}
    with Journal.open(journal_path(st)) as j:
        assert build_report(j)["competences"]["C8"]["proven"] is False
    # a key bound to no assessor may follow but not command
    hdr = send_raw_command(st, root, "shared", dict(lie, cmd_id="lie-3", mark_id="lie-3"))
    assert not hdr["ok"] and "bound to no assessor" in hdr["error"]
    # bert's own key: now two keys observed C8 -> proven, fingerprints in journal and report
    hdr = send_raw_command(st, root, "bert", dict(lie, cmd_id="b-1", mark_id="b-1", assessor_id="anna",
                                                  text="bert saw it"))
    assert hdr["ok"]
    wait_for(lambda: any(m.mark_id == "b-1" for m in journal_events(st, AssessorMark)), 15, "bert's mark")
    (mb,) = [m for m in journal_events(st, AssessorMark) if m.mark_id == "b-1"]
    assert (mb.assessor_id, mb.key_fp) == ("bert", fp["bert"])
    with Journal.open(journal_path(st)) as j:
        rep = build_report(j)
    c8 = rep["competences"]["C8"]
    assert c8["proven"] is True
    assert {a: v["key_fp"] for a, v in c8["assessors"].items()} == {"anna": fp["anna"], "bert": fp["bert"]}
    assert {m["key_fp"] for m in rep["marks"] if m["mark_id"] in ("lie-1", "b-1")} == {fp["anna"], fp["bert"]}
    html = render_html(rep)
    assert fp["anna"] in html and fp["bert"] in html
    # ... and at the consoles, by that identity
    a = rig["a"]
    wait_for(lambda: (lambda c8: c8["proven"] and set(c8["verdicts"]) == {"anna", "bert"})(
        next(c for c in a.get("/api/station/st-1/board")["competences"] if c["id"] == "C8")), 15, "C8 proven at anna's")
    row = next(c for c in a.get("/api/station/st-1/board")["competences"] if c["id"] == "C8")
    assert row["verdicts"]["anna"]["key_fp"] == fp["anna"] and row["verdicts"]["bert"]["key_fp"] == fp["bert"]


ATTACK = """<!doctype html><html><body><iframe name="sink" id="sink"></iframe>
<form id="f1" method="POST" target="sink" action="{url}/api/station/st-1/exam" enctype="text/plain">
<input name='{{"action":"assign","candidate_id":"PWNED-form-plain","candidate_name":"x","pad":"' value='"}}'></form>
<form id="f2" method="POST" target="sink" action="{url}/api/station/st-1/exam">
<input name="action" value="assign"><input name="candidate_id" value="PWNED-form-url"></form>
<script>
const results = {{}};
async function attempt(name, f) {{
  try {{ const r = await f(); results[name] = "status " + r.status + " type " + r.type; }}
  catch (e) {{ results[name] = "error " + e.name; }}
}}
(async () => {{
  const body = JSON.stringify({{action: "assign", candidate_id: "PWNED-fetch", candidate_name: "pwned"}});
  await attempt("nocors_plain", () => fetch("{url}/api/station/st-1/exam", {{method: "POST", mode: "no-cors",
    credentials: "include", headers: {{"Content-Type": "text/plain"}}, body}}));
  await attempt("cors_json", () => fetch("{url}/api/station/st-1/exam", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json"}}, body}}));
  await attempt("cors_mark", () => fetch("{url}/api/station/st-1/mark", {{method: "POST", credentials: "include",
    headers: {{"Content-Type": "application/json", "X-CSRF-Token": "guess"}},
    body: JSON.stringify({{competence: "C1", kind: "observed", text: "PWNED-mark"}})}}));
  await attempt("read_room", async () => {{ const r = await fetch("{url}/api/room", {{credentials: "include"}});
    results.read_room_body = (await r.text()).slice(0, 40); return r; }});
  document.getElementById("f1").submit();
  await new Promise(r => setTimeout(r, 700));
  document.getElementById("f2").submit();
  await new Promise(r => setTimeout(r, 700));
  document.title = "done";
  document.body.dataset.results = JSON.stringify(results);
}})();
</script></body></html>"""


class _AttackServer:
    """The attacker's page on another origin (another port of this machine)."""

    def __init__(self, html: str):
        page = html.encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_a_page_of_another_origin_cannot_act_or_read(rig):
    a = rig["a"]
    before = a.get("/api/stats")["refused"]
    attacker = _AttackServer(ATTACK.format(url=a.url))
    try:
        with browser() as br:
            ctx = br.new_context()
            page = ctx.new_page()
            page.goto(a.url + "/")                      # the assessor's console is open: it has a session cookie
            page.wait_for_selector('.card[data-station="st-1"]')
            evil = ctx.new_page()
            evil.goto(f"http://127.0.0.1:{attacker.port}/attack.html")
            evil.wait_for_function("document.title === 'done'", timeout=20000)
            results = json.loads(evil.get_attribute("body", "data-results"))
    finally:
        attacker.close()
    # no fetch got a readable answer; the simple (no-cors) POST reached the console and was refused
    assert results["cors_json"].startswith("error") and results["cors_mark"].startswith("error"), results
    assert results["read_room"].startswith("error") and "read_room_body" not in results, results
    after = a.get("/api/stats")["refused"]
    assert after["content_type"] - before["content_type"] >= 3, (before, after)   # no-cors fetch + 2 forms
    assert after["origin"] + after["content_type"] + after["csrf"] - sum(before.values()) >= 5, (before, after)
    # nothing journaled: a sentinel command sent afterwards arrives, no PWNED before it
    assert a.post("/api/station/st-1/mark", {"competence": "D7", "kind": "note", "text": "sentinel-xo"})[0] == 200
    wait_for(lambda: any(m.text == "sentinel-xo" for m in journal_events(rig["st"], AssessorMark)), 15, "sentinel")
    assert not any("PWNED" in e.candidate_id for e in journal_events(rig["st"], ExamControl))
    assert not any("PWNED" in m.text for m in journal_events(rig["st"], AssessorMark))
    assert "PWNED" not in json.dumps(a.get("/api/room"))


def test_foreign_host_csrf_and_headers(rig):
    a = rig["a"]
    st, body, _ = a.raw("/api/room", headers={"Host": f"evil.example:{a.port}"})
    assert st == 403 and body["code"] == "host"
    st, body, _ = a.raw("/report/st-1.json", headers={"Host": "rebind.attacker.test"})
    assert st == 403
    st, _, hdrs = a.raw("/")
    csp = hdrs["content-security-policy"]
    script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
    assert "'self'" in script and "unsafe-inline" not in script and "unsafe-eval" not in script
    assert "frame-ancestors 'none'" in csp and hdrs["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in {k.lower() for k in a.raw("/report/st-1.html")[2]}
    mark = json.dumps({"competence": "C2", "kind": "note", "text": "PWNED-direct"}).encode()
    token = a.session()["csrf"]
    cases = [({"Content-Type": "application/json", "Origin": a.url}, "csrf"),                    # no token
             ({"Content-Type": "application/json", "Origin": a.url, "X-CSRF-Token": "x" * 43}, "csrf"),
             ({"Content-Type": "text/plain", "Origin": a.url, "X-CSRF-Token": token}, "content_type"),
             ({"Content-Type": "application/json", "Origin": "http://evil.example", "X-CSRF-Token": token}, "origin"),
             ({"Content-Type": "application/json", "X-CSRF-Token": token}, "origin")]               # no Origin
    for headers, code in cases:
        st, body, _ = a.raw("/api/station/st-1/mark", mark, headers)
        assert (st, body["code"]) == (403, code), (headers, body)
    # the token belongs to the session cookie: another client with the token but without the cookie fails
    import urllib.request
    st, body, _ = a.raw("/api/station/st-1/mark", mark, {"Content-Type": "application/json", "Origin": a.url,
                                                          "X-CSRF-Token": token}, opener=urllib.request.build_opener())
    assert (st, body["code"]) == (403, "csrf")
    assert a.post("/api/station/st-1/mark", {"competence": "C2", "kind": "note", "text": "legit"})[0] == 200
    # a console on a non-loopback address without TLS and logins does not start
    cfg = Path(a.root) / "exposed.toml"
    cfg.write_text(a.cfg.read_text().replace('http_host = "127.0.0.1"', 'http_host = "0.0.0.0"'))
    p = subprocess.run(station_cmd("--config", str(cfg), "console", "--duration", "1"), capture_output=True,
                       text=True, timeout=60, cwd=REPO)
    assert p.returncode == 2 and "TLS" in p.stderr and "Traceback" not in p.stderr, p.stderr


def board_row(console, cid):
    return next(c for c in console.get("/api/station/st-1/board")["competences"] if c["id"] == cid)


def test_shared_console_logins_keep_two_assessors_apart_and_consensus(rig):
    s, root = rig["s"], rig["root"]
    fp = {n: keys.fingerprint(keys.load_public(Path(root) / "keys" / f"{n}.key")) for n in PASSWORDS}
    st, body, _ = s.raw("/api/room")
    assert st == 401 and body["code"] == "login"
    with browser() as br:
        pages = {}
        for who in PASSWORDS:
            ctx = br.new_context()          # two assessors, two browser sessions on the one console
            page = ctx.new_page()
            page.goto(s.url + "/")
            page.wait_for_selector("#login")
            page.select_option("#login-assessor", who)
            page.fill("#login-password", "wrong password")
            page.click("#login-go")
            page.locator("#msg.error", has_text="wrong").wait_for(timeout=10000)
            page.fill("#login-password", PASSWORDS[who])
            page.click("#login-go")
            page.wait_for_selector('.card[data-station="st-1"]', timeout=15000)
            assert who.title() in page.inner_text("#assessor")
            pages[who] = page
        for who, kind in (("carla", "observed"), ("dirk", "not_observed")):
            page = pages[who]
            page.goto(s.url + "/#/station/st-1")
            page.wait_for_selector("#board table")
            page.select_option("#mark-form select[name=competence]", "C7")
            page.select_option("#mark-form select[name=kind]", kind)
            page.fill("#mark-form textarea", f"{who} says {kind}")
            page.click("#place-mark")
            page.locator("#msg.ok", has_text="journaled").wait_for(timeout=15000)
        wait_for(lambda: set(board_row(rig["a"], "C7")["verdicts"]) >= {"carla", "dirk"}, 15, "both verdicts")
        row = board_row(rig["a"], "C7")
        assert row["verdicts"]["carla"]["verdict"] == "observed" and row["verdicts"]["carla"]["key_fp"] == fp["carla"]
        assert row["verdicts"]["dirk"]["verdict"] == "not_observed" and row["verdicts"]["dirk"]["key_fp"] == fp["dirk"]
        assert row["disagree"] and not row["proven"]
        pages["carla"].locator('#board tr[data-competence="C7"].disagree').wait_for(timeout=10000)
        assert "kappa" in pages["carla"].inner_text("#agreement")
        # one assessor's consensus is not enough; both keys' consensus is
        for n, who in enumerate(("carla", "dirk")):
            page = pages[who]
            page.select_option("#mark-form select[name=competence]", "C7")
            page.select_option("#mark-form select[name=kind]", "consensus_observed")
            page.fill("#mark-form textarea", "agreed after discussion")
            page.click("#place-mark")
            page.locator("#msg.ok", has_text="consensus_observed journaled").wait_for(timeout=15000)
            if n == 0:
                wait_for(lambda: "carla" in board_row(rig["a"], "C7")["consensus"], 15, "carla's consensus")
                assert not board_row(rig["a"], "C7")["proven"]
        wait_for(lambda: board_row(rig["a"], "C7")["proven"], 15, "C7 proven by consensus of both keys")
        pages["dirk"].locator('#board tr[data-competence="C7"].proven').wait_for(timeout=10000)
    row = board_row(rig["a"], "C7")
    assert row["verdicts"]["dirk"]["verdict"] == "not_observed"        # the original verdicts stay
    ag = rig["a"].get("/api/station/st-1/board")["agreement"]    # this session has four assessors: two rate
    assert ag["n"] >= 1 and len(ag["raters"]) == 2 and "kappa" in ag
    rep = rig["a"].get("/report/st-1.json")
    c7 = next(c for c in rep["competences"] if c["id"] == "C7")
    assert c7["proven"] and c7["disagree"] and set(c7["consensus"]) == {"carla", "dirk"}
    assert "kappa" in rep["agreement"] and "Cohen" in rig["a"].get("/report/st-1.html")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM), made with the cryptography package."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cp, kp = directory / "console.crt", directory / "console.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    kp.chmod(0o600)
    return cp, kp


def test_tls_console_with_logins(rig, tmp_path):
    from station import config
    from station.console.web.app import check_exposure
    from station.errors import UserError
    root = rig["root"]
    cert, key = self_signed(tmp_path)
    login = f"""
[[console.assessor]]
id = "carla"
name = "Carla C."
secret_key_file = "{assessor_key(root, 'carla')}"
password_hash = "{hash_password(PASSWORDS['carla'])}"
"""
    t = WebConsole(tmp_path, "tls", [rig["st"]], "", secret_key_file=assessor_key(root, "shared"), extra=login,
                   tls=(cert, key))
    t.start()
    try:
        st, body, hdrs = t.raw("/api/session")
        assert st == 200 and body["logins"] and body["assessor"] is None
        (cookie,) = list(t.jar)                      # set by the session start() asked for
        assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly") and cookie.name == f"station_console_{t.port}"
        assert "max-age" in hdrs["strict-transport-security"]
        t.csrf = body["csrf"]
        st, body = t.post("/api/login", {"assessor_id": "carla", "password": PASSWORDS["carla"]})
        assert st == 200 and body["assessor"]["id"] == "carla"
        t.csrf = body["csrf"]
        assert t.get("/api/room")["assessor"]["id"] == "carla"
        import urllib.request
        with pytest.raises(Exception):     # plain HTTP on the TLS port is not served
            urllib.request.urlopen(f"http://127.0.0.1:{t.port}/api/session", timeout=5).read()
    finally:
        t.stop()
    # a non-loopback address is accepted with TLS and logins, refused without either
    exposed = tmp_path / "exposed.toml"
    exposed.write_text(t.cfg.read_text().replace('http_host = "127.0.0.1"', 'http_host = "0.0.0.0"'))
    check_exposure(config.load([exposed], system=False))
    no_tls = tmp_path / "no-tls.toml"
    no_tls.write_text(exposed.read_text().replace(f'tls_cert_file = "{cert}"', 'tls_cert_file = ""')
                      .replace(f'tls_key_file = "{key}"', 'tls_key_file = ""'))
    with pytest.raises(UserError, match="TLS"):
        check_exposure(config.load([no_tls], system=False))
