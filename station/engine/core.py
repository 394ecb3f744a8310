"""The metrics engine: batches of events in, messages out. Pure and incremental.

No I/O, no threads, no clock reads: "now" is the batch's ``t_ns`` and the batch's ``watermark_ns``
says up to when the input is complete. Feeding the same batches gives the same messages, which is
what makes ``station replay`` reproduce a live session exactly.

Outputs of ``ingest`` / ``finish`` are ``(kind, t_ns, body)`` tuples, body a plain dict:

- ``summary``: every ``engine.summary_interval_ms`` of batch time: live indicators, the current
  contact, session totals so far, spans closed since the previous summary;
- ``contact``: a contact's final figures, once nothing later can change them;
- ``alert``: dead air now, a source lost or back, input not from an evidence device
  (``injected_input``; left out of every figure), an input device without evidence appeared
  (``device_no_evidence``), an audio source changed, removed or without evidence
  (``device_changed``), an integrity event (what the recorder refused or dropped:
  ``events.INTEGRITY_KINDS``);
- ``mark`` / ``exam``: an assessor mark, contact marker or exam command, as journaled;
- ``evidence``: the 19 competences so far (figures, rules, marks), after a contact or mark.

Results that do not depend on timing of arrival (contacts and their figures, the report) are
independent of how events were split into batches: every activity span, contact boundary and
figure is computed only once its inputs are final (see ``tracks`` and ``contacts``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from station import intervals as iv
from station.events import ROLE_BEFORE_ROLES
from station.engine.contacts import Clusterer, MarkerBook
from station.engine.rejected import RejectedVoice
from station.engine.figures import CAT_CODES, CAT_NAMES, LIVE_FIGURES, NS_PER_MS, WindowData, share, window_figures
from station.engine.tracks import Points, SpanTrack

MOUSE_BIN_NS = 10 * NS_PER_MS
FAR = 2 ** 62
CHAT_KINDS = ("chat", "email")
LIVE_CONTACT_FIGURES = LIVE_FIGURES["phone"] + LIVE_FIGURES["chat"]   # in a summary's current contact
LATE_STREAMS = ("speech", "key", "mouse", "click", "scroll", "focus")   # measurements that can be late
LIVE_FIGURES_REFRESH_DIV = 100   # live contact figures are at most 1/100 of the contact's age old ...
LIVE_FIGURES_MIN_AGE_NS = 5_000_000_000   # ... or this old (ns), whichever is more
MAX_HEALTH_LOG = 1_000         # health details kept per source (the report's capture links)
MAX_INTEGRITY_EVENTS = 10_000   # integrity events kept for the report (all are counted)
MAX_DEVICE_CHANGES = 1_000      # device changes kept for the report
INTEGRITY_ALERT_NS = 60 * 1_000_000_000   # after the first, an integrity kind is alerted at most this often


def _rows(cols: dict, keep: np.ndarray) -> dict:
    """The rows of a stream's columns where ``keep`` (bool array) is set."""
    idx = np.flatnonzero(keep)
    return {c: ([v[i] for i in idx] if isinstance(v, list) else np.asarray(v)[keep]) for c, v in cols.items()}


def _evidence_only(streams: dict) -> dict:
    """The streams without input that is not evidence: key, click and scroll rows flagged
    ``injected``; mouse bins with no move of an evidence device (``count - injected <= 0``).
    Such input is counted (``Engine._count_injected``) and alerted, never in a figure (typing,
    keys pressed, mouse activity, S1/S3/S4, D-figures, contacts). The decision is in the
    journaled events, so every replay makes it the same way."""
    out = streams
    for name in ("key", "mouse", "click", "scroll"):
        cols = streams.get(name)
        if cols is None:
            continue
        inj = np.asarray(cols["injected"])
        if name == "mouse":
            keep = np.asarray(cols["count"]) - inj.astype(np.int64) > 0
        else:
            keep = ~inj.astype(bool)
        if keep.all():
            continue
        if out is streams:
            out = dict(streams)
        if keep.any():
            out[name] = _rows(cols, keep)
        else:
            del out[name]
    return out


class Engine:
    """Derives activity, contacts and evidence from events.

    cfg: a station.config.Config. reference_text: the typing-task reference for D5 ("" = none).
    """

    def __init__(self, cfg, *, reference_text: str = "", live: bool = True):
        """live=False skips live summaries and alerts (for computing final figures fast)."""
        self.live = live
        a, sp, ct = cfg.activity, cfg.speech, cfg.contacts
        self.cfg_activity, self.cfg_rules = a, cfg.rules
        self.info_cats = tuple(a.info_categories)
        codes = np.arange(len(CAT_NAMES))   # category code -> is an info / a chat-or-email category
        self._info_code = np.isin(codes, [CAT_CODES[x] for x in self.info_cats])
        self._chat_code = np.isin(codes, [CAT_CODES[x] for x in CHAT_KINDS])
        self.reference_text = reference_text
        self.agent = SpanTrack(sp.padding_ms * NS_PER_MS, sp.min_spurt_ms * NS_PER_MS)
        self.customer = SpanTrack(sp.padding_ms * NS_PER_MS, sp.min_spurt_ms * NS_PER_MS)
        self.typing = SpanTrack(a.typing_burst_gap_ms * NS_PER_MS + 1)
        self.mouse = SpanTrack(a.mouse_active_gap_ms * NS_PER_MS + 1)
        self.presses = Points()
        self.typed: list[tuple[int, str]] = []
        self.focus_t: list[int] = []
        self.focus_cat: list[int] = []
        self._focus_arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.phone = Clusterer(ct.phone_gap_ms * NS_PER_MS)
        self.phone_min_customer = ct.phone_min_customer_ms * NS_PER_MS
        self.chat = {k: Clusterer(ct.chat_gap_ms * NS_PER_MS) for k in CHAT_KINDS}
        self._focus_fed = 0          # focus segments fed to chat clusterers
        self._speech_ptr = [0, 0]    # closed spurts fed to the phone clusterer, per channel
        self.markers = MarkerBook()
        self.pending: list[dict] = []    # contacts waiting for final inputs
        self.contacts: list[dict] = []   # finalized contact figures
        self.marks: list[dict] = []
        self.exam: dict = {}
        self.exam_events: list[dict] = []
        self.health: dict[str, str] = {}
        self.health_detail: dict[str, str] = {}
        self.health_log: dict[str, list[str]] = {}   # the first MAX_HEALTH_LOG details per source
        self.integrity: dict[str, int] = {}          # IntegrityEvent kind -> events/connections
        self.integrity_events: list[dict] = []       # the first MAX_INTEGRITY_EVENTS, for the report
        self._integrity_alert_t: dict[str, int] = {}
        self.devices: dict[tuple[str, str], dict] = {}   # (kind, device) -> its last DeviceEvent as a dict
        self.exam_devices: list[dict] | None = None      # devices present at the (last) exam start
        self.device_changes: list[dict] = []         # the first MAX_DEVICE_CHANGES alerted DeviceEvents
        self.simulated = False                       # fed by scenario (demo/test) sources
        self.lost: dict[str, list[list[int]]] = {}
        self.watermark = -FAR
        self.now = -FAR
        self.first_t: int | None = None
        self.summary_ns = cfg.engine.summary_interval_ms * NS_PER_MS
        self.next_tick: int | None = None
        self.dead_air_alerted_at: int | None = None
        self._totals = {"phone": {}, "chat": {}, "email": {}}
        self.finished = False
        self.evidence_dirty = False
        self.injected = {"keys": 0, "mouse": 0}   # input not from an evidence device (counted, not in figures)
        self.rejected = RejectedVoice(sp.padding_ms * NS_PER_MS)   # agent speech frames not counted
        self.injected_first_ns: int | None = None
        self._injected_alerted = {"keys": 0, "mouse": 0}
        self._injected_alert_t: int | None = None
        self._live_fig: tuple | None = None   # (contact kind, start, as-of ns, figures) of the summary
        self.late: dict[str, int] = {}        # late measurements left out, per stream (_without_late)
        self._step = 0                        # ingest/finish calls so far (current_contact's memo)
        self._contact_memo: tuple | None = None
        self.late_first_ns: int | None = None

    # ------------------------------------------------------------------ input
    def ingest(self, batch) -> list[tuple[str, int, dict]]:
        out: list[tuple[str, int, dict]] = []
        self._step += 1
        self.now = max(self.now, batch.t_ns)
        if self.first_t is None:
            rng = batch.time_range()
            self.first_t = min(batch.t_ns, rng[0]) if rng else batch.t_ns
        s, late = self._without_late(batch.streams)
        self.watermark = max(self.watermark, batch.watermark_ns)
        if "focus" in s:
            self._add_focus(s["focus"])
        if "speech" in s:
            self._add_speech(s["speech"])
        self._count_injected(s)
        s = _evidence_only(s)
        if "key" in s:
            self._add_keys(s["key"])
        mouse_t = [s[n]["t_ns"] for n in ("mouse", "click", "scroll") if n in s]
        if mouse_t:
            t = np.concatenate(mouse_t)
            self.mouse.add(np.column_stack((t, t + MOUSE_BIN_NS)))
        self.typing.add(iv.EMPTY, self.watermark)
        self.mouse.add(iv.EMPTY, self.watermark)
        for track in (self.agent, self.customer):
            track.add(iv.EMPTY, self.watermark)
        for name in ("device", "contact", "mark", "exam", "health", "integrity"):
            if name in s:
                for ev in batch.events(name):
                    out += getattr(self, f"_on_{name}")(ev)
        self._detect_contacts()
        out += self._finalize_due()
        if not self.live:
            return out
        if late:
            out.append(("alert", self.now, {"type": "late_events", "events": late, "total": sum(self.late.values()),
                                            "first_ns": self.late_first_ns, "watermark_ns": self.watermark}))
        out += self._alerts()
        if self.evidence_dirty:
            self.evidence_dirty = False
            out.append(("evidence", batch.t_ns, self.evidence()))
        if self.next_tick is None:
            self.next_tick = (batch.t_ns // self.summary_ns + 1) * self.summary_ns
        if batch.t_ns >= self.next_tick:
            out.append(("summary", batch.t_ns, self.summary()))
            self.next_tick = (batch.t_ns // self.summary_ns + 1) * self.summary_ns
        return out

    def _without_late(self, streams) -> tuple[dict, dict[str, int]]:
        """The batch's streams without its late measurements, and how many of each stream were late.

        Late: a measurement (speech frame, key, mouse, click, scroll, focus change) older than the
        watermark of the batch before this one, i.e. one the sources had declared delivered
        already (see ``station.watermark``). It is kept in the journal, counted in ``late`` and
        alerted, and left out of every figure: including it would change spans and contacts
        that may already be final, so live and replay could differ. Lateness depends only on the
        journaled batch sequence (each batch's events and the previous watermark), so every
        replay finds the same late events (``replay`` never merges a batch with late events into
        the one before it). Assessor commands and health events are never late: they are stamped
        by the recorder."""
        prev = self.watermark
        counts: dict[str, int] = {}
        out = dict(streams)
        for name in LATE_STREAMS:
            cols = streams.get(name)
            if cols is None:
                continue
            t = np.asarray(cols["t_ns"])
            late = t < prev
            if not late.any():
                continue
            n = int(np.count_nonzero(late))
            counts[name] = n
            keep = ~late
            out[name] = _rows(cols, keep)
            first = int(t[late].min())
            self.late_first_ns = first if self.late_first_ns is None else min(self.late_first_ns, first)
            self.late[name] = self.late.get(name, 0) + n
        return out, counts

    def _count_injected(self, s) -> None:
        """Count input not from an evidence device (keys, mouse moves, clicks, scrolls flagged
        injected: XTEST, uinput, a device off the allow-list); ``_evidence_only`` then leaves it
        out of every figure."""
        firsts = []
        if "key" in s:
            m = s["key"]["injected"] & s["key"]["down"]
            if m.any():
                self.injected["keys"] += int(np.count_nonzero(m))
                firsts.append(int(s["key"]["t_ns"][m].min()))
        for name in ("mouse", "click", "scroll"):
            if name in s:
                inj = np.asarray(s[name]["injected"], dtype=np.int64)
                if inj.any():
                    self.injected["mouse"] += int(inj.sum())
                    firsts.append(int(s[name]["t_ns"][inj > 0].min()))
        if firsts:
            first = min(firsts)
            self.injected_first_ns = first if self.injected_first_ns is None else min(self.injected_first_ns, first)

    def _add_speech(self, cols) -> None:
        t, dur, ch, sp = cols["t_ns"], cols["dur_ns"], cols["channel"], cols["speech"]
        end = t + dur
        self._count_rejected_voice(cols)
        for channel, track in ((0, self.agent), (1, self.customer)):
            m = ch == channel
            if not m.any():
                continue
            v = m & sp
            elem = np.empty((int(np.count_nonzero(v)), 2), dtype=np.int64)
            elem[:, 0] = t[v]
            elem[:, 1] = end[v]
            track.add(elem, int(end[m].max()))

    def _count_rejected_voice(self, cols) -> None:
        """Feed the agent channel's frames to ``rejected`` (see station/engine/rejected.py), from
        the journaled flags, so a replay counts the same."""
        flags = cols.get("flags")
        if flags is None:
            return
        a = np.asarray(cols["channel"]) == 0
        if a.any():
            self.rejected.add(cols["t_ns"][a], cols["dur_ns"][a], np.asarray(cols["vad"])[a],
                              np.asarray(cols["speech"])[a], np.asarray(flags)[a])

    def _add_keys(self, cols) -> None:
        t, down = cols["t_ns"], cols["down"]
        press = down
        pt = t[press]
        self.presses.extend(pt, cols["key_class"][press])
        chars = cols["char"]
        if any(chars):
            for i in np.flatnonzero(press):
                c = chars[i]
                if c:
                    self.typed.append((int(t[i]), c))
        rel = t[~down]
        elem = np.empty((len(pt) + len(rel), 2), dtype=np.int64)   # presses [t, t+1), releases [t-1, t)
        elem[:len(pt), 0] = pt
        elem[:len(pt), 1] = pt + 1
        elem[len(pt):, 0] = rel - 1
        elem[len(pt):, 1] = rel
        self.typing.add(elem)

    def _add_focus(self, cols) -> None:
        for t, cat in zip(cols["t_ns"], cols["category"]):
            t = int(t)
            if self.focus_t and t < self.focus_t[-1]:
                t = self.focus_t[-1]   # late focus event: keep the order, never rewrite history
            self.focus_t.append(t)
            self.focus_cat.append(CAT_CODES.get(cat, 0))

    def _on_contact(self, ev) -> list:
        closed = self.markers.apply(ev.t_ns, ev.action, ev.kind, ev.contact_ref, ev.assessor_id)
        if closed is not None:
            self.pending.append({"kind": closed.kind, "lo": closed.start, "hi": closed.end,
                                 "source": "assessor", "ref": closed.ref})
        body = {"type": "contact_marker", "action": ev.action, "kind": ev.kind, "ref": ev.contact_ref,
                "assessor_id": ev.assessor_id, "t_ns": ev.t_ns, **_key(ev)}
        return [("mark", ev.t_ns, body)]

    def _on_mark(self, ev) -> list:
        body = {"type": "mark", "mark_id": ev.mark_id, "assessor_id": ev.assessor_id,
                "assessor_name": ev.assessor_name, "competence": ev.competence, "kind": ev.kind,
                "text": ev.text, "t_ns": ev.t_ns, **_key(ev)}
        self.marks.append(body)
        self.evidence_dirty = True
        return [("mark", ev.t_ns, body)]

    def _on_exam(self, ev) -> list:
        body = {"action": ev.action, "candidate_id": ev.candidate_id, "candidate_name": ev.candidate_name,
                "assessor_id": ev.assessor_id, "t_ns": ev.t_ns, **_key(ev)}
        self.exam_events.append(body)
        if ev.action == "assign":
            self.exam.update(candidate_id=ev.candidate_id, candidate_name=ev.candidate_name)
        elif ev.action in ("start", "end"):
            self.exam[f"{ev.action}_ns"] = ev.t_ns
            if ev.action == "start":   # the device set in force at exam start (the report lists it)
                self.exam_devices = [dict(d) for d in self.devices.values() if d["state"] != "removed"]
        return [("exam", ev.t_ns, body)]

    def _on_integrity(self, ev) -> list:
        """Count and list what the recorder refused or dropped; alert the first of each kind at
        once, then at most once per INTEGRITY_ALERT_NS with the running count."""
        n = self.integrity.get(ev.kind, 0) + max(1, ev.count)
        self.integrity[ev.kind] = n
        if ev.kind == "simulated":
            self.simulated = True
        if len(self.integrity_events) < MAX_INTEGRITY_EVENTS:
            self.integrity_events.append({"t_ns": ev.t_ns, "kind": ev.kind, "detail": ev.detail, "count": ev.count})
        last = self._integrity_alert_t.get(ev.kind)
        if last is not None and ev.t_ns - last < INTEGRITY_ALERT_NS:
            return []
        self._integrity_alert_t[ev.kind] = ev.t_ns
        return [("alert", ev.t_ns, {"type": "integrity", "kind": ev.kind, "detail": ev.detail, "count": n})]

    def _on_device(self, ev) -> list:
        """Keep the last identity and evidence decision per device (the report lists them)."""
        prev = self.devices.get((ev.kind, ev.device))
        self.devices[(ev.kind, ev.device)] = new = dataclasses.asdict(ev)
        if prev is not None and {k: v for k, v in prev.items() if k != "t_ns"} == \
                {k: v for k, v in new.items() if k != "t_ns"}:
            return []   # the same device announced again (the capture re-announces after a reconnect)
        return self._device_alerts(ev)

    def _device_alerts(self, ev) -> list:
        """("alert", t_ns, body) tuples for a device event, at once:

        - input: a device without evidence appeared or changed (``device_no_evidence``; what it
          sends is counted as injected). The X server's own XTEST devices (role "xtest", as the
          capture found the server marks them; never by name) exist in every X session: they are
          listed (card, report) but not alerted on appearing; input through them is alerted as
          ``injected_input``. A journal written before roles decodes with role "?": there the rule of
          the software that wrote it applies (an xi2 device named XTEST), so its replay is exact;
        - audio: a source changed (the recorded stream moved to another source, the default source
          switched), went away (headset unplugged) or gives no evidence (``device_changed``);
          nothing for a source present with evidence.
        Alerted device events are kept in ``device_changes`` (the first MAX_DEVICE_CHANGES)."""
        if ev.kind == "input":
            if ev.role == "xtest" or (ev.role == ROLE_BEFORE_ROLES and "XTEST" in ev.name
                                      and ev.device.startswith("xi2:")):
                return []
            if ev.state not in ("present", "changed") or ev.evidence:
                return []
            body = {"type": "device_no_evidence", "kind": ev.kind, "device": ev.device, "name": ev.name,
                    "bus": ev.bus, "vendor": ev.vendor, "product": ev.product, "virtual": ev.virtual,
                    "detail": ev.detail}
        else:
            if ev.state == "present" and ev.evidence:
                return []
            body = {"type": "device_changed", "kind": ev.kind, "device": ev.device, "state": ev.state,
                    "evidence": ev.evidence, "virtual": ev.virtual, "name": ev.name, "detail": ev.detail}
        if len(self.device_changes) < MAX_DEVICE_CHANGES:
            self.device_changes.append(dataclasses.asdict(ev))
        return [("alert", ev.t_ns, body)]

    def _on_health(self, ev) -> list:
        prev = self.health.get(ev.source)
        self.health[ev.source] = ev.state
        self.health_detail[ev.source] = ev.detail
        log = self.health_log.setdefault(ev.source, [])
        if len(log) < MAX_HEALTH_LOG:
            log.append(ev.detail)
        spans = self.lost.setdefault(ev.source, [])
        out = []
        if ev.state == "lost" and prev != "lost":
            spans.append([ev.t_ns, None])
            out.append(("alert", ev.t_ns, {"type": "source_lost", "source": ev.source, "detail": ev.detail}))
        elif ev.state != "lost" and prev == "lost":
            if spans and spans[-1][1] is None:
                spans[-1][1] = ev.t_ns
            out.append(("alert", ev.t_ns, {"type": "source_back", "source": ev.source, "detail": ev.detail}))
        return out

    # ------------------------------------------------------------- contacts
    def _speech_safe(self) -> int:
        """Speech before this time is final on both channels."""
        safe = []
        for tr in (self.agent, self.customer):
            safe.append(tr.open[0] if tr.open is not None else tr.frontier)
        return min(safe)

    def _detect_contacts(self) -> None:
        safe = self._speech_safe()
        new = []
        for ch, tr in enumerate((self.agent, self.customer)):
            spans = tr.closed.all
            i = self._speech_ptr[ch]
            j = i + int(np.searchsorted(spans[i:, 0], safe, side="left")) if len(spans) > i else i
            for k in range(i, j):
                new.append((int(spans[k, 0]), int(spans[k, 1]), ch))
            self._speech_ptr[ch] = j
        new.sort()
        for start, end, ch in new:
            done = self.phone.add(start, end, end - start if ch == 1 else 0)
            self._phone_closed(done)
        self._phone_closed(self.phone.close_if_due(safe))
        # chat / email from final focus segments
        ft = self.focus_t
        while self._focus_fed + 1 < len(ft) and ft[self._focus_fed + 1] <= self.watermark:
            i = self._focus_fed
            cat = CAT_NAMES[self.focus_cat[i]]
            if cat in CHAT_KINDS and ft[i + 1] > ft[i]:
                self._chat_closed(cat, self.chat[cat].add(ft[i], ft[i + 1], ft[i + 1] - ft[i]))
            self._focus_fed += 1
        # a segment not yet fed (still open, or ending after the watermark) may be of any kind
        safe = min(self.watermark, ft[self._focus_fed]) if self._focus_fed < len(ft) else self.watermark
        for kind, cl in self.chat.items():
            self._chat_closed(kind, cl.close_if_due(safe))

    def _phone_closed(self, cluster) -> None:
        if cluster is not None and cluster.weight >= self.phone_min_customer:
            self.pending.append({"kind": "phone", "lo": cluster.start, "hi": cluster.end, "source": "auto", "ref": ""})

    def _chat_closed(self, kind, cluster) -> None:
        if cluster is not None:
            self.pending.append({"kind": kind, "lo": cluster.start, "hi": cluster.end, "source": "auto", "ref": ""})

    def _current_focus(self) -> str:
        return CAT_NAMES[self.focus_cat[-1]] if self.focus_cat else "other"

    @staticmethod
    def _track_final_at(tr: SpanTrack, hi: int) -> bool:
        if tr.frontier < hi:
            return False
        o = tr.open
        return o is None or o[0] >= hi or (o[1] >= hi and o[1] - o[0] >= tr.min_ns)

    def _finalize_due(self) -> list:
        out = []
        keep = []
        for p in self.pending:
            hi = p["hi"]
            ready = self.finished or (
                self.watermark >= hi
                and all(self._track_final_at(tr, hi) for tr in (self.agent, self.customer, self.typing, self.mouse)))
            if not ready:
                keep.append(p)
                continue
            if p["source"] == "auto" and self.markers.overlaps(p["kind"], p["lo"], hi):
                continue  # an assessor's explicit contact overrides the automatic one
            fig = self.figures_for(p["kind"], p["lo"], hi)
            fig["source"] = p["source"]
            fig["ref"] = p["ref"]
            fig["id"] = f"{p['kind']}@{p['lo']}"
            self.contacts.append(fig)
            self._accumulate(fig)
            self.evidence_dirty = True
            out.append(("contact", hi, _public(fig)))
        self.pending = keep
        return out

    def _accumulate(self, fig) -> None:
        tot = self._totals[fig["kind"]]
        for k, v in fig["_ns"].items():
            tot[k] = tot.get(k, 0) + v
        tot["count"] = tot.get("count", 0) + 1

    # --------------------------------------------------------------- windows
    def focus_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """focus_t and focus_cat as int64 arrays (cached; only the new tail is converted, so a
        6-hour session does not convert its whole focus history at every change)."""
        cached = self._focus_arrays
        if cached is None or len(cached[0]) != len(self.focus_t):
            n = 0 if cached is None else len(cached[0])
            t = np.array(self.focus_t[n:], dtype=np.int64)
            c = np.array(self.focus_cat[n:], dtype=np.int64)
            self._focus_arrays = (t, c) if cached is None else (np.concatenate((cached[0], t)),
                                                                 np.concatenate((cached[1], c)))
        return self._focus_arrays

    def focus_spans(self, lo: int, hi: int) -> tuple[dict[str, np.ndarray], dict[str, int], int]:
        """Per-category focus spans in [lo, hi); entries per category (focus changes inside the
        window); chat/email<->info switches among those changes. Vectorised: a long window costs
        a few numpy passes, not a Python loop over its focus changes."""
        t, c = self.focus_arrays()
        n = len(t)
        if n == 0:
            return {}, {}, 0
        i = max(0, int(np.searchsorted(t, lo, side="right")) - 1)
        j = int(np.searchsorted(t, hi, side="left"))
        if j <= i:
            return {}, {}, 0
        seg_t, cats = t[i:j], c[i:j]
        starts = np.maximum(seg_t, lo)
        ends = np.empty(j - i, dtype=np.int64)
        ends[:-1] = t[i + 1:j]
        ends[-1] = t[j] if j < n else hi
        np.minimum(ends, hi, out=ends)
        spans: dict[str, np.ndarray] = {}   # (the order of the keys carries no meaning)
        valid = ends > starts
        for code in np.flatnonzero(np.bincount(cats[valid], minlength=len(CAT_NAMES))):
            m = valid & (cats == code)
            spans[CAT_NAMES[int(code)]] = iv.normalize(np.column_stack((starts[m], ends[m])))
        inside = seg_t >= lo
        counts = np.bincount(cats[inside], minlength=len(CAT_NAMES))
        entries = {CAT_NAMES[int(code)]: int(counts[code]) for code in np.flatnonzero(counts)}
        # a switch: a focus change inside the window between chat/email and an info category
        k = np.flatnonzero(inside) + i
        k = k[k > 0]
        a, b = c[k - 1], c[k]
        info, chatish = self._info_code, self._chat_code
        switches = int(np.count_nonzero((chatish[a] & info[b]) | (info[a] & chatish[b])))
        return spans, entries, switches

    def unknown_spans(self, lo: int, hi: int) -> np.ndarray:
        pairs = [(s, e if e is not None else hi) for spans in self.lost.values() for s, e in spans]
        return iv.clip(iv.normalize(pairs), lo, hi) if pairs else iv.EMPTY.copy()

    def window_data(self, kind: str, lo: int, hi: int) -> WindowData:
        """Inputs of the figures for [lo, hi), open spans included (callers finalize a window only
        once no later input can change it: see _finalize_due)."""
        focus, entries, switches = self.focus_spans(lo, hi)
        pt, pc = self.presses.window(lo, hi)
        ft, fc = self.focus_arrays()
        if len(ft):
            idx = np.searchsorted(ft, pt, side="right") - 1
            pcat = np.where(idx >= 0, fc[np.maximum(idx, 0)], 0)
        else:
            pcat = np.zeros(len(pt), dtype=np.int64)
        return WindowData(kind, lo, hi,
                          self.agent.within(lo, hi, True), self.customer.within(lo, hi, True),
                          self.typing.within(lo, hi, True), self.mouse.within(lo, hi, True),
                          focus, pt, pc, pcat, entries, switches, self.unknown_spans(lo, hi))

    def figures_for(self, kind: str, lo: int, hi: int, live: bool = False) -> dict:
        """The figures of [lo, hi) (live: only those of a summary's current contact)."""
        return window_figures(self.window_data(kind, lo, hi), self.cfg_activity,
                              self.cfg_rules, self.info_cats, live=live)

    # ---------------------------------------------------------------- live
    def current_contact(self) -> dict | None:
        """The contact going on now (live), or None. Computed once per ingest (the dead-air alert
        and the summary of one batch ask for it; the state does not change in between)."""
        memo = self._contact_memo
        if memo is not None and memo[0] == self._step:
            return memo[1]
        contact = self._current_contact()
        self._contact_memo = (self._step, contact)
        return contact

    def _current_contact(self) -> dict | None:
        for m in reversed(self.markers.open_contacts()):
            return {"kind": m.kind, "start_ns": m.start, "source": "assessor"}
        cl = self.phone.current
        if cl is not None and self.now - self._last_speech_end() < self.phone.gap_ns and (
                cl.weight >= self.phone_min_customer
                or cl.weight + iv.measure(self.customer.within(cl.start, FAR, True)) >= self.phone_min_customer):
            return {"kind": "phone", "start_ns": cl.start, "source": "auto"}
        if cl is None and (self.agent.active() or self.customer.active()):
            opens = [tr.open[0] for tr in (self.agent, self.customer) if tr.active()]
            if self.customer.active() and self.customer.open[1] - self.customer.open[0] >= self.phone_min_customer:
                return {"kind": "phone", "start_ns": min(opens), "source": "auto"}
        cur = self._current_focus()
        if cur in CHAT_KINDS:
            c = self.chat[cur].current
            start = c.start if c is not None else self.focus_t[-1]
            return {"kind": cur, "start_ns": start, "source": "auto"}
        for kind, cl2 in self.chat.items():
            if cl2.current is not None and self.watermark - cl2.current.end < cl2.gap_ns:
                return {"kind": kind, "start_ns": cl2.current.start, "source": "auto"}
        return None

    def _last_speech_end(self) -> int:
        ends = [-FAR]
        for tr in (self.agent, self.customer):
            if tr.open is not None:
                ends.append(tr.open[1])
            le = tr.closed.last_end()
            if le is not None:
                ends.append(le)
        return max(ends)

    def _silence_now(self, contact) -> int:
        if contact is None or contact["kind"] != "phone" or self.agent.active() or self.customer.active():
            return 0
        known = min(self.agent.frontier, self.customer.frontier)
        return max(0, known - max(self._last_speech_end(), contact["start_ns"]))

    def _alerts(self) -> list:
        out = []
        if self.injected != self._injected_alerted and (
                self._injected_alert_t is None or self.now - self._injected_alert_t >= 60_000_000_000):
            out.append(("alert", self.now, {"type": "injected_input", "keys": self.injected["keys"],
                                            "mouse": self.injected["mouse"],
                                            "first_ns": self.injected_first_ns}))
            self._injected_alerted = dict(self.injected)
            self._injected_alert_t = self.now
        return out + self._dead_air_alert()

    def _dead_air_alert(self) -> list:
        contact = self.current_contact()
        silence = self._silence_now(contact)
        if silence >= self.cfg_activity.dead_air_ms * NS_PER_MS:
            start = self.now - silence
            if self.dead_air_alerted_at != start:
                self.dead_air_alerted_at = start
                return [("alert", self.now, {"type": "dead_air", "since_ns": start, "silence_ms": silence // NS_PER_MS})]
        return []

    def summary(self) -> dict:
        contact = self.current_contact()
        live = {"agent_talking": self.agent.active(), "customer_talking": self.customer.active(),
                "typing": self.typing.active(), "mouse": self.mouse.active(),
                "focus": self._current_focus(), "dead_air_ms": self._silence_now(contact) // NS_PER_MS}
        if contact is not None:
            as_of, fig = self._live_contact_figures(contact["kind"], contact["start_ns"])
            contact = dict(contact, duration_ms=max(0, self.now - contact["start_ns"]) // NS_PER_MS,
                           figures_as_of_ns=as_of, **fig)
        spans = {name: tr.take_new().tolist() for name, tr in
                 (("agent", self.agent), ("customer", self.customer), ("typing", self.typing), ("mouse", self.mouse))}
        t, c = self.focus_arrays()
        since = getattr(self, "_focus_reported", 0)
        focus = [[int(t[k]), CAT_NAMES[int(c[k])]] for k in range(since, len(t))]
        self._focus_reported = len(t)
        return {"t_ns": self.now, "live": live, "contact": contact, "session": self.session_totals(),
                "spans": spans, "focus": focus, "health": dict(self.health), "exam": dict(self.exam)}

    def _live_contact_figures(self, kind: str, start: int) -> tuple[int, dict]:
        """The current contact's figures so far, for the live summary: (as-of ns, figures).

        Computing them costs time in proportion to the contact's length, so they are refreshed
        when LIVE_FIGURES_MIN_AGE_NS (5 s) or 1/LIVE_FIGURES_REFRESH_DIV of the contact's age,
        whichever is more, has passed since the last refresh. Their staleness is then at most
        5 s, or 1 % of the contact's duration (6 s into a 10-minute call), and the cost of a
        summary no longer grows with the call. (The live flags and session totals of every
        summary are current.) Deterministic: a function of the summary times,
        so replays give the same summaries. A new contact is computed at once.
        """
        cached = self._live_fig
        if cached is not None and cached[0] == kind and cached[1] == start:
            if self.now - cached[2] < max(self.summary_ns, LIVE_FIGURES_MIN_AGE_NS,
                                          (self.now - start) // LIVE_FIGURES_REFRESH_DIV):
                return cached[2], cached[3]
        fig = self.figures_for(kind, start, max(self.now, start + 1), live=True)
        fig = {k: fig.get(k) for k in LIVE_CONTACT_FIGURES if k in fig}
        self._live_fig = (kind, start, self.now, fig)
        return self.now, fig

    def session_totals(self) -> dict:
        ph = self._totals["phone"]
        chat_n = self._totals["chat"].get("count", 0)
        email_n = self._totals["email"].get("count", 0)
        out = {"contacts": {"phone": ph.get("count", 0), "chat": chat_n, "email": email_n},
               "conversation_ms": ph.get("conv", 0) // NS_PER_MS,
               "s1_share": share(ph.get("info", 0), ph.get("conv", 0)),
               "s3_share": share(ph.get("s3_conv", 0), ph.get("conv", 0)),
               "dead_air_ms": ph.get("dead", 0) // NS_PER_MS,
               "keys_pressed": self.presses.n, "marks": len(self.marks),
               "injected_input": dict(self.injected), "integrity": dict(self.integrity),
               "simulated": self.simulated}
        if any(self.rejected.totals.values()):   # only then, like late_events: older summaries unchanged
            out["agent_voice_rejected_ms"] = {k: v // NS_PER_MS for k, v in self.rejected.totals.items()}
        if self.late:   # only then: a session without late events gives the summaries it always gave
            out["late_events"] = sum(self.late.values())
        no_evidence = sorted(d["name"] or d["device"] for (kind, _), d in self.devices.items()
                             if kind == "input" and not d["evidence"] and d["state"] != "removed")
        if no_evidence:   # input devices present now whose input counts toward nothing (console card)
            out["input_no_evidence"] = no_evidence
        return out

    def evidence(self) -> dict:
        """The 19 competences so far (see evidence.session_evidence), for the live board."""
        from station.engine.evidence import session_evidence
        self.contacts.sort(key=lambda f: (f["start_ns"], f["kind"]))
        return {"t_ns": self.now, "competences": session_evidence(self), "exam": dict(self.exam)}

    # ---------------------------------------------------------------- end
    def finish(self, t_ns: int) -> list[tuple[str, int, dict]]:
        """Close everything at session end t_ns and emit the last contacts and a final summary."""
        self._step += 1
        self.now = max(self.now, t_ns)
        self.watermark = max(self.watermark, t_ns)
        for tr in (self.agent, self.customer, self.typing, self.mouse):
            tr.flush(t_ns)
        for m in self.markers.open_contacts():
            m.end = max(t_ns, m.start)
            self.pending.append({"kind": m.kind, "lo": m.start, "hi": m.end, "source": "assessor", "ref": m.ref})
        self._detect_contacts()
        self._phone_closed(self.phone.flush())
        # the focus segment still open at the end counts up to t_ns
        ft = self.focus_t
        if self._focus_fed < len(ft):
            cat = CAT_NAMES[self.focus_cat[-1]]
            while self._focus_fed + 1 < len(ft):
                self._focus_fed += 1
            if cat in CHAT_KINDS and t_ns > ft[-1]:
                self._chat_closed(cat, self.chat[cat].add(ft[-1], t_ns, t_ns - ft[-1]))
        for kind, cl in self.chat.items():
            self._chat_closed(kind, cl.flush())
        self.finished = True
        out = self._finalize_due()
        self.contacts.sort(key=lambda f: (f["start_ns"], f["kind"]))
        if self.live:
            out.append(("evidence", self.now, self.evidence()))
            out.append(("summary", self.now, self.summary()))
        return out


def _public(fig: dict) -> dict:
    """Contact figures without internal totals."""
    return {k: v for k, v in fig.items() if not k.startswith("_")}


def _key(ev) -> dict:
    """``{"key_fp": ...}`` for a command sent with a key; {} without one, so the mark, contact and
    exam bodies of journals written before key fingerprints existed replay byte for byte."""
    return {"key_fp": ev.key_fp} if ev.key_fp else {}
