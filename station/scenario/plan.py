"""The plan of a simulated exam: who speaks, types, moves the mouse and looks at which window, when.

``make_plan(seed, duration_ms, frame_ms, reference)`` decides everything from the seed, before any
audio exists. All times are integer milliseconds from the scenario start (``Scenario`` adds its
``start_ns``). Speech boundaries lie on the audio frame grid (multiples of ``frame_ms``) so that a
perfect VAD reproduces the planned speech exactly.

Layout (about 10 minutes by default; longer durations get more contacts)::

    xterm | typing task (reference text, known errors and corrections) | crm
          | phone call | after-contact work | chat (with consultations) | ... | phone call | wrap-up

Speech constraints kept by construction (the metrics engine's definitions depend on them):

- each utterance >= 600 ms, made of phrases separated by pauses of 40..240 ms (< 300 ms padding,
  bridged by the engine), phrases >= 200 ms;
- gaps between two utterances of one party >= 500 ms;
- every call has >= 1 dead air (a gap of 3.6..5.5 s) and >= 1 overtalk (both speak 0.8..1.2 s);
  ordinary turn gaps are 0.3..1.4 s, so neither dead air nor overtalk happens by accident;
- >= 35 s without speech between calls; speech only occurs inside calls.

Failure mode: a duration too short for the layout raises ``station.errors.UserError`` (exit 2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from station.errors import UserError
from station.events import KeyClass

AGENT, CUSTOMER = 0, 1

# app -> (wm_class, title template, process). Titles may contain {n}: the contact number.
APPS: dict[str, tuple[str, str, str]] = {
    "xterm": ("xterm", "candidate@station: ~", "xterm"),
    "typing": ("typing-test", "Typing test - exercise 1", "typing-test"),
    "crm": ("crm-app", "CRM - customer file {n}", "crm-app"),
    "kb": ("knowledge-base", "Knowledge base - tariffs and contracts", "knowledge-base"),
    "script": ("call-script", "Call script - inbound call", "call-script"),
    "chat": ("chat-client", "Chat - customer {n}", "chat-client"),
}

CRM_TEXT = ("jansen peeters 2000 antwerpen kerkstraat 12 0470 12 34 56 contract 4471 "
            "adres gewijzigd factuur maart tarief basis klant belt over levering ")
CHAT_TEXT = ("goedemiddag, ik bekijk uw vraag even. uw bestelling is onderweg en wordt morgen "
             "geleverd. kan ik u nog ergens anders mee helpen? ")
KB_TEXT = "tarief verhuis opzeg levering "

MIN_PHONE_MS = 40_000
MIN_CHAT_MS = 30_000


@dataclass
class Utterance:
    """One talk spurt of one party: [start_ms, end_ms), voiced phrases inside (pauses < 300 ms)."""

    index: int
    party: int
    start_ms: int
    end_ms: int
    phrases: list[tuple[int, int]]
    f0: float            # mean fundamental frequency, Hz
    level_dbfs: float    # RMS level of the voiced phrases, dBFS


@dataclass
class KeyPlan:
    """A key stroke: press and release (ms), KeyClass, the character it types ("" if none)."""

    press_ms: int
    release_ms: int
    key_class: int
    char: str = ""


@dataclass
class Contact:
    kind: str        # "phone" | "chat"
    start_ms: int
    end_ms: int
    number: int      # 1-based contact number (window titles)


@dataclass
class Plan:
    seed: int
    duration_ms: int
    frame_ms: int
    utterances: list[Utterance] = field(default_factory=list)
    keys: list[KeyPlan] = field(default_factory=list)
    mouse_bins: list[tuple[int, int, int]] = field(default_factory=list)   # (t_ms, count, distance_px)
    clicks: list[tuple[int, int, bool]] = field(default_factory=list)      # (t_ms, button, down)
    focus: list[tuple[int, str, int]] = field(default_factory=list)        # (t_ms, app, contact number)
    contacts: list[Contact] = field(default_factory=list)
    reference: str = ""
    typing_task_ms: tuple[int, int] = (0, 0)
    bleed_db: float = -25.0          # earpiece-to-mic level of the customer signal, dB
    agent_voice: tuple[float, float] = (120.0, -22.0)     # (f0 Hz, level dBFS)
    customer_voice: tuple[float, float] = (200.0, -26.0)

    def party_utterances(self, party: int) -> list[Utterance]:
        return [u for u in self.utterances if u.party == party]


def apply_backspaces(keys: list[KeyPlan]) -> str:
    """The text a key sequence leaves behind (printable chars appended, backspace deletes one)."""
    out: list[str] = []
    for k in keys:
        if k.key_class == KeyClass.BACKSPACE:
            if out:
                out.pop()
        elif k.key_class == KeyClass.PRINTABLE and k.char:
            out.append(k.char)
    return "".join(out)


class _Planner:
    def __init__(self, seed: int, duration_ms: int, frame_ms: int, reference: str):
        self.rng = random.Random(seed)
        self.plan = Plan(seed=seed, duration_ms=duration_ms, frame_ms=frame_ms, reference=reference)
        self.focus_app = ""
        self.contact_no = 0
        self.mouse_xy_dist = 0

    # ------------------------------------------------------------------ helpers
    def q(self, t_ms: float) -> int:
        """Round to the audio frame grid."""
        f = self.plan.frame_ms
        return int(round(t_ms / f)) * f

    def set_focus(self, t: int, app: str) -> None:
        self.plan.focus.append((int(t), app, self.contact_no))
        self.focus_app = app

    def key(self, t: int, key_class: int, char: str = "") -> int:
        """Press at t; returns the time of the next press (inter-key interval)."""
        rng = self.rng
        dwell = rng.randint(60, 110)
        self.plan.keys.append(KeyPlan(int(t), int(t) + dwell, int(key_class), char))
        iki = min(450.0, max(85.0, rng.lognormvariate(math.log(175), 0.3)))
        return int(t + iki)

    def type_char(self, t: int, ch: str) -> int:
        if ch == "\n":
            return self.key(t, KeyClass.ENTER)
        if ch == "\t":
            return self.key(t, KeyClass.NAVIGATION)
        if ch.isupper():
            # shift down, key, shift up (a modifier is a key stroke of its own)
            shift_down = t
            k_t = t + self.rng.randint(35, 70)
            nxt = self.key(k_t, KeyClass.PRINTABLE, ch)
            release = self.plan.keys[-1].release_ms
            self.plan.keys.append(KeyPlan(shift_down, release + self.rng.randint(10, 40), KeyClass.MODIFIER))
            return max(nxt, release + 50)
        return self.key(t, KeyClass.PRINTABLE, ch)

    def type_text(self, t: int, text: str, end_limit: int, *, correct_p: float = 0.03) -> int:
        """Type text (stops at end_limit); occasional corrected slips (char + backspace)."""
        rng = self.rng
        for ch in text:
            if t >= end_limit - 500:
                break
            if ch.isalpha() and rng.random() < correct_p:
                t = self.type_char(t, rng.choice("abcdefghijklmnoprstuvw"))
                t = self.key(t + rng.randint(150, 400), KeyClass.BACKSPACE)
            t = self.type_char(t, ch)
            if ch == " " and rng.random() < 0.08:
                t += rng.randint(400, 1200)  # a thinking pause, still inside the burst (< 2 s)
        return t

    def mouse_move(self, t: int, dur_ms: int, click: bool = True) -> int:
        """Mouse motion in 10 ms bins for dur_ms, then optionally a click. Returns the end time."""
        rng = self.rng
        t0 = (int(t) // 10) * 10
        n = max(1, dur_ms // 10)
        speed = rng.uniform(4, 30)
        for i in range(n):
            if rng.random() < 0.06:   # a bin without motion events
                continue
            cnt = rng.randint(1, 3)
            self.plan.mouse_bins.append((t0 + 10 * i, cnt, max(1, int(round(speed * rng.uniform(0.5, 1.5))))))
        t = t0 + 10 * n
        if click:
            down = t + rng.randint(30, 120)
            up = down + rng.randint(70, 140)
            self.plan.clicks.append((down, 1, True))
            self.plan.clicks.append((up, 1, False))
            t = up + 30
        return t

    def switch(self, t: int, app: str) -> int:
        """Bring app to the front (mouse click or Alt+Tab). Returns when the focus has changed."""
        if self.focus_app == app:
            return t
        rng = self.rng
        if rng.random() < 0.7:
            end = self.mouse_move(t, rng.randint(250, 700))
            down_t = self.plan.clicks[-2][0]
            self.set_focus(down_t + rng.randint(8, 25), app)
            return end
        alt = t
        tab = t + rng.randint(60, 120)
        tab_up = tab + rng.randint(60, 100)
        self.plan.keys.append(KeyPlan(alt, tab_up + rng.randint(30, 80), KeyClass.MODIFIER))
        self.plan.keys.append(KeyPlan(tab, tab_up, KeyClass.NAVIGATION))
        self.set_focus(tab_up + rng.randint(20, 60), app)
        return tab_up + 150

    # ------------------------------------------------------------------ blocks
    def typing_task(self, t: int) -> int:
        """The D5 typing test: the reference text with known uncorrected and corrected errors."""
        rng = self.rng
        ref = self.plan.reference
        t = self.switch(t, "typing")
        t += rng.randint(1200, 2500)
        start = t
        letters = [i for i, c in enumerate(ref) if c.isalpha()]
        n_unc = rng.randint(max(1, round(0.012 * len(ref))), max(2, round(0.035 * len(ref))))
        n_cor = rng.randint(3, 7)
        chosen = rng.sample(letters, min(len(letters), n_unc + n_cor))
        uncorrected = set(chosen[:n_unc])
        corrected = set(chosen[n_unc:])
        keyboard = "qwertyuiopasdfghjklzxcvbnm"
        i = 0
        while i < len(ref):
            ch = ref[i]
            if i in uncorrected:
                wrong = rng.choice([c for c in keyboard if c != ch.lower()])
                t = self.type_char(t, wrong)
                i += 1
                continue
            if i in corrected:
                # a slip noticed after 0..2 more characters: backspace them all, retype
                wrong = rng.choice([c for c in keyboard if c != ch.lower()])
                t = self.type_char(t, wrong)
                extra = ref[i + 1:i + 1 + rng.randint(0, 2)]
                for c in extra:
                    t = self.type_char(t, c)
                t += rng.randint(200, 500)
                for _ in range(1 + len(extra)):
                    t = self.key(t, KeyClass.BACKSPACE)
                t = self.type_char(t, ch)
                i += 1
                continue
            t = self.type_char(t, ch)
            if ch in ".," and rng.random() < 0.5:
                t += rng.randint(300, 900)
            i += 1
        self.plan.typing_task_ms = (start, t)
        t += rng.randint(1500, 3000)
        return t

    def phone_speech(self, a: int, b: int) -> tuple[int, int, int]:
        """Plan the utterances of one call inside [a, b). Returns (first start, last end, dead air start).

        At least one overtalk and one dead air are forced (the call is >= MIN_PHONE_MS long)."""
        rng = self.rng
        length = b - a
        dead_air_after = a + int(length * rng.uniform(0.3, 0.55))
        overtalk_after = a + int(length * rng.uniform(0.1, 0.3))
        force_overtalk_at = a + length // 2
        want_overtalks = rng.randint(1, 2)
        overtalks = 0
        dead_air_at = -1
        last_end = {AGENT: -10**9, CUSTOMER: -10**9}
        party = AGENT
        t = self.q(a)
        first = last = t
        overlap = 0   # > 0: the utterance being planned starts this long before the previous one ends
        while True:
            ulen = self._utt_len(party)
            if overlap:
                ulen = max(ulen, overlap + rng.randint(800, 1600))
            if overtalks == 0 and t >= force_overtalk_at:
                ulen = max(ulen, 2400)   # long enough to be interrupted
            start = self.q(max(t, last_end[party] + 600))
            end = self.q(start + ulen)
            if end > b:
                break
            self._add_utterance(party, start, end)
            last_end[party] = end
            last = max(last, end)
            was_overlap = overlap > 0
            overlap = 0
            if (not was_overlap and end - start >= 2000 and overtalks < want_overtalks
                    and end > overtalk_after
                    and (rng.random() < 0.35 or (overtalks == 0 and end >= force_overtalk_at))):
                overlap = self.q(rng.randint(800, 1200))
                t = end - overlap
                overtalks += 1
                overtalk_after = end + length // 4
                party = 1 - party
                continue
            switch = was_overlap or rng.random() < 0.8
            if dead_air_at < 0 and end > dead_air_after:
                gap = rng.randint(3600, 5500)
                dead_air_at = last
            elif switch:
                gap = rng.randint(300, 1400)
            else:
                gap = rng.randint(700, 1500)
            t = last + gap
            if switch:
                party = 1 - party
        if overtalks == 0 or dead_air_at < 0 or dead_air_at >= last:
            raise AssertionError(f"call {a}..{b} lacks dead air or overtalk")
        return first, last, dead_air_at

    def _utt_len(self, party: int) -> int:
        rng = self.rng
        if party == AGENT:
            if rng.random() < 0.1:
                return rng.randint(5000, 8000)
            return int(min(4500, max(700, rng.lognormvariate(math.log(2000), 0.45))))
        return int(min(6000, max(700, rng.lognormvariate(math.log(2500), 0.5))))

    def _add_utterance(self, party: int, start: int, end: int) -> None:
        rng = self.rng
        f = self.plan.frame_ms
        phrases = []
        t = start
        while t < end:
            plen = self.q(rng.uniform(400, 1600))
            if end - (t + plen) < 600:   # too little left for pause + phrase: take it all
                plen = end - t
            phrases.append((t, t + plen))
            t += plen
            if t >= end:
                break
            pause = max(2 * f, min(240 - 240 % f, self.q(rng.uniform(60, 220))))
            t += pause
        f0, level = self.plan.agent_voice if party == AGENT else self.plan.customer_voice
        self.plan.utterances.append(Utterance(
            index=len(self.plan.utterances), party=party, start_ms=start, end_ms=end, phrases=phrases,
            f0=f0 * rng.uniform(0.92, 1.08), level_dbfs=level + rng.uniform(-2.0, 2.0)))

    def phone_activity(self, t: int, first: int, last: int, dead_air_at: int) -> int:
        """Keyboard, mouse and window switches during a call (independent of who speaks), from
        max(t, first) on. A knowledge-base lookup fills the dead air. Returns when the agent is free."""
        rng = self.rng
        reserved = (dead_air_at + rng.randint(200, 600), dead_air_at + 3000)
        t = max(t, first + rng.randint(500, 2500))
        while t < last - 1500:
            if reserved[0] - 2000 <= t < reserved[1]:
                t = self.switch(max(t, reserved[0]), "kb")
                t = self.mouse_move(t, rng.randint(600, 1200))
                t = self.type_text(t, KB_TEXT[: rng.randint(5, 12)], reserved[1] + 4000)
                t = max(t, reserved[1]) + rng.randint(300, 1000)
                reserved = (10**15, 10**15)
                continue
            limit = min(last - 500, reserved[0] - 200)
            action = rng.choices(["crm", "kb", "script", "idle"], [0.35, 0.15, 0.1, 0.4])[0]
            if action == "idle" or limit - t < 2500:
                t += rng.randint(1500, 5000)
                if t < reserved[0] - 2000 < t + 5000:
                    t = min(t, reserved[0] - 2000)
                elif reserved[0] - 2000 <= t:
                    t = min(t, reserved[0])
                continue
            if action == "crm":
                t = self.switch(t, "crm")
                pos = rng.randrange(len(CRM_TEXT) - 40)
                text = CRM_TEXT[pos:pos + rng.randint(8, 35)]
                if rng.random() < 0.3:
                    text += "\t"
                t = self.type_text(t, text, limit)
            elif action == "kb":
                t = self.switch(t, "kb")
                for _ in range(rng.randint(1, 3)):
                    if t < limit - 1500:
                        t = self.mouse_move(t, rng.randint(300, 1500)) + rng.randint(100, 800)
            else:
                t = self.switch(t, "script")
                t = self.mouse_move(t, rng.randint(400, 1200), click=False)
            t += rng.randint(200, 1500)
        return t

    def after_contact_work(self, t: int, limit: int) -> int:
        """Wrap-up typing in the CRM in a few separate bursts."""
        rng = self.rng
        t = self.switch(t, "crm")
        for _ in range(rng.randint(2, 4)):
            if t > limit - 8000:
                break
            pos = rng.randrange(len(CRM_TEXT) - 40)
            t = self.type_text(t, CRM_TEXT[pos:pos + rng.randint(15, 40)] + "\n", limit - 3000)
            t += rng.randint(2500, 5000)
        return t

    def chat(self, a: int, b: int) -> tuple[int, int]:
        """A chat contact in [a, b): cycles of reading the customer's message, usually consulting
        the knowledge base or the CRM (5-15 s, so focus returns to chat well within 60 s), and typing
        a reply. Returns (first focus into chat, last focus out of chat)."""
        rng = self.rng
        t = self.switch(a, "chat")
        first_in = self.plan.focus[-1][0]
        while t < b - 15_000:
            # read the customer's message
            if rng.random() < 0.5:
                t = self.mouse_move(t, rng.randint(300, 900), click=False)
            t += rng.randint(2000, 5000)
            if rng.random() < 0.8 and t < b - 25_000:
                app = rng.choice(["kb", "crm"])
                t = self.switch(t, app)
                stay = t + rng.randint(5000, 15000)
                while t < stay:
                    if app == "kb":
                        t = self.mouse_move(t, rng.randint(400, 1500)) + rng.randint(200, 1500)
                    else:
                        pos = rng.randrange(len(CRM_TEXT) - 40)
                        t = self.type_text(t, CRM_TEXT[pos:pos + rng.randint(6, 20)], stay + 3000)
                        t += rng.randint(500, 2000)
                t = self.switch(t, "chat")
            pos = rng.randrange(len(CHAT_TEXT) - 60)
            text = CHAT_TEXT[pos:pos + rng.randint(20, 55)] + "\n"
            t = self.type_text(t, text, b - 2000) + rng.randint(500, 1500)
        t += rng.randint(1000, 3000)
        self.switch(max(t, b - 3000), "crm")
        return first_in, self.plan.focus[-1][0]


def make_plan(seed: int, duration_ms: int, frame_ms: int, reference: str) -> Plan:
    """Plan a whole exam (see the module docstring). Deterministic in (seed, duration, frame, text)."""
    if not reference:
        raise UserError("the typing-task reference text is empty", exit_code=2)
    p = _Planner(seed, duration_ms, frame_ms, reference)
    rng = p.rng
    plan = p.plan
    plan.bleed_db = -25.0 + rng.uniform(-1.0, 1.0)
    plan.agent_voice = (rng.choice([110.0, 125.0, 190.0, 210.0]), -22.0 + rng.uniform(-2, 2))
    plan.customer_voice = (rng.choice([105.0, 120.0, 200.0, 220.0]), -26.0 + rng.uniform(-2, 2))

    p.set_focus(0, "xterm")
    t = p.mouse_move(rng.randint(800, 2000), rng.randint(500, 1500), click=False) + rng.randint(1000, 3000)
    t = p.typing_task(t)
    t = p.switch(t, "crm") + rng.randint(3000, 6000)

    tail = 12_000
    remaining = duration_ms - t - tail
    n_phone = max(2, int((remaining + 40_000) // 330_000))
    seq: list[str] = []
    for i in range(n_phone):
        seq.append("phone")
        if i % 2 == 0 and i + 1 < n_phone:
            seq.append("chat")
    gaps = [rng.randint(36_000, 45_000) for _ in range(len(seq) - 1)]
    weights = [(1.0 if k == "phone" else 0.6) * rng.uniform(0.85, 1.15) for k in seq]
    avail = remaining - sum(gaps)
    lengths = [int(avail * w / sum(weights)) for w in weights]
    short = [L < (MIN_PHONE_MS if k == "phone" else MIN_CHAT_MS) for k, L in zip(seq, lengths)]
    if remaining <= 0 or any(short):
        need = duration_ms - avail + int(sum(weights) * max(
            (MIN_PHONE_MS if k == "phone" else MIN_CHAT_MS) / w for k, w in zip(seq, weights)))
        raise UserError(f"scenario duration {duration_ms / 1000:.0f} s is too short for the typing task, "
                        f"two calls and a chat; use at least {math.ceil(need / 1000) + 1} s", exit_code=2)

    starts = []
    a = t
    for i, length in enumerate(lengths):
        starts.append(a)
        a += length + (gaps[i] if i < len(gaps) else 0)
    free = t   # when the agent is free for the next activity
    for i, (kind, a, length) in enumerate(zip(seq, starts, lengths)):
        b = a + length
        nxt = starts[i + 1] if i + 1 < len(starts) else duration_ms
        p.contact_no += 1
        if kind == "phone":
            # the agent opens the call script just before picking up
            free = p.switch(max(free, a - rng.randint(4000, 8000)), "script")
            first, last, dead_air_at = p.phone_speech(a, b)
            free = p.phone_activity(free, first, last, dead_air_at)
            plan.contacts.append(Contact("phone", first, last, p.contact_no))
            free = p.after_contact_work(max(free, last + rng.randint(1000, 3000)), nxt - 10_000)
        else:
            first_in, last_out = p.chat(max(free, a), b)
            plan.contacts.append(Contact("chat", first_in, last_out, p.contact_no))
            free = p.after_contact_work(last_out + rng.randint(2000, 5000), nxt - 10_000)
    plan.keys.sort(key=lambda k: k.press_ms)
    plan.clicks.sort()
    plan.mouse_bins.sort()
    _check(plan)
    return plan


def _check(plan: Plan) -> None:
    """Internal consistency of a plan; a failure is a bug in the planner (AssertionError)."""
    end = plan.duration_ms
    for k in plan.keys:
        assert 0 <= k.press_ms < k.release_ms < end, k
    for t, _, _ in plan.mouse_bins:
        assert 0 <= t < end
    for t, _, _ in plan.clicks:
        assert 0 <= t < end
    times = [f[0] for f in plan.focus]
    assert times == sorted(times) and times[-1] < end
    for party in (AGENT, CUSTOMER):
        us = plan.party_utterances(party)
        for u, v in zip(us, us[1:]):
            assert v.start_ms - u.end_ms >= 500, (u, v)
        for u in us:
            assert u.end_ms - u.start_ms >= 600 and u.end_ms <= end
            for (s, e), (s2, _) in zip(u.phrases, u.phrases[1:]):
                assert 0 < s2 - e < 300
