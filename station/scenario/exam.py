"""``Scenario``: a seeded simulated exam that produces the same events as the real sources.

The plan (``plan.py``) is made up front (cheap); audio is synthesized (``synth.py``) and classified
by the real ``station.vad.FrameClassifier`` lazily, one chunk (1 s of frames) at a time, as
``events_until`` asks for it. Keys, mouse and focus events are built from the plan up front.

Event fidelity (what a real station would record):

- ``SpeechFrame``: both channels, every frame; the agent channel is classified with the customer
  frame's level (bleed check) and ``near_key_press`` from the planned key presses (click check);
- ``KeyEvent``: press and release with the key class; ``char`` on presses only, and only while the
  focused window's category (from ``Categorizer``) is ``typing_task``;
- ``MouseBin`` every 10 ms while the mouse moves, ``MouseClick`` press/release;
- ``FocusChange`` with category from ``Categorizer.classify`` and title through ``private_title``.

Failure modes: a duration too short for the layout, or an unreadable or empty reference text,
raise ``station.errors.UserError`` (exit code 2).
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np

from station.categories import Categorizer
from station.config import REPO_DEFAULTS, Config
from station.errors import UserError
from station.events import Batch, FocusChange, KeyEvent, MouseBin, MouseClick
from station.scenario.plan import APPS, Plan, make_plan
from station.scenario.synth import NOISE_DBFS, AudioSynth
from station.scenario.truth import compute_truth
from station.vad import FrameClassifier

MS = 1_000_000
CHUNK_FRAMES = 50
DEMO_REFERENCE = Path("typing") / "demo-reference.txt"


def reference_path(cfg: Config) -> Path:
    """typing.reference_file (relative to the config directory), else the demo reference text."""
    if cfg.typing.reference_file:
        p = Path(cfg.typing.reference_file).expanduser()
        return p if p.is_absolute() else cfg.base_dir / p
    p = cfg.base_dir / DEMO_REFERENCE
    return p if p.exists() else REPO_DEFAULTS.parent / DEMO_REFERENCE


def load_reference(cfg: Config) -> str:
    """The reference text with whitespace runs (newlines included) collapsed to single spaces."""
    path = reference_path(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the typing reference text: {e}", exit_code=2) from None
    text = " ".join(text.split())
    if not text:
        raise UserError(f"{path}: the typing reference text is empty", exit_code=2)
    return text


def classifier(cfg: Config, channel: int) -> FrameClassifier:
    """A FrameClassifier set up from [audio] as the live source does without a headset profile."""
    return FrameClassifier.from_audio_config(channel, cfg.audio)


class Scenario:
    """A simulated exam of ``duration_s`` seconds starting at station time ``start_ns``.

    ``events_until(t_ns)`` returns, exactly once, every event with time < t_ns (a SpeechFrame once
    its end <= t_ns), sorted by time. ``truth()`` gives the ground truth from the plan.
    Same (cfg, seed, duration_s, start_ns) -> the same events, whatever the step sizes.
    """

    def __init__(self, cfg: Config, *, seed: int = 1, duration_s: float = 600.0, start_ns: int = 0):
        if not duration_s > 0:
            raise UserError(f"scenario duration must be > 0 s, got {duration_s}", exit_code=2)
        self.cfg = cfg
        self.seed = int(seed)
        self.frame_ms = int(cfg.audio.frame_ms)
        self.fs = int(cfg.audio.sample_rate)
        duration_ms = int(round(duration_s * 1000))
        duration_ms -= duration_ms % self.frame_ms
        self.duration_ms = duration_ms
        self.start_ns = int(start_ns)
        self.end_ns = self.start_ns + duration_ms * MS
        self.frame_ns = self.frame_ms * MS
        self.plan: Plan = make_plan(self.seed, duration_ms, self.frame_ms, load_reference(cfg))
        self.categorizer = Categorizer(cfg)
        self._focus_cats = [self.categorizer.classify(*self._window(app, n)[:3]) for _, app, n in self.plan.focus]
        self._events = self._input_events()
        self._ev_next = 0
        # audio
        self._agent = classifier(cfg, 0)
        self._customer = classifier(cfg, 1)
        self._press_ms = np.array([k.press_ms for k in self.plan.keys], dtype=np.int64)
        self.synth = AudioSynth(self.plan, fs=self.fs, frame_ms=self.frame_ms, chunk_frames=CHUNK_FRAMES,
                                start_ms_keys=[k.press_ms for k in self.plan.keys])
        gate = cfg.audio.noise_floor_dbfs + cfg.audio.gate_margin_db
        self.synth.set_noise_dbfs(min(NOISE_DBFS, gate - 11.0))
        self.click_window_ms = int(cfg.audio.click_window_ms)
        self.n_frames = duration_ms // self.frame_ms
        self._frames: list = []        # classified, not yet returned (both channels, time order)
        self._frames_made = 0          # frames (per channel) classified so far
        self._frame_next = 0           # frames (per channel) returned so far
        self._done_until = self.start_ns

    # ------------------------------------------------------------------ plan -> input events
    def _window(self, app: str, n: int) -> tuple[str, str, str, int, int]:
        """(wm_class, title, process, window_id, pid) of an app window."""
        wm_class, title, process = APPS[app]
        idx = list(APPS).index(app)
        return (wm_class, title.format(n=n if n else "new"), process,
                0x2000001 + idx * 0x100000, 1000 + 37 * idx + self.seed % 97)

    def _input_events(self) -> list:
        plan = self.plan
        t0 = self.start_ns
        evs: list = []
        for (t, app, n), cat in zip(plan.focus, self._focus_cats):
            wm_class, title, process, wid, pid = self._window(app, n)
            evs.append(FocusChange(t0 + t * MS, wid, wm_class, self.categorizer.private_title(title),
                                   pid, process, cat))
        focus_t = [f[0] for f in plan.focus]
        for k in plan.keys:
            i = bisect.bisect_right(focus_t, k.press_ms) - 1
            private = i >= 0 and self._focus_cats[i] == "typing_task"
            evs.append(KeyEvent(t0 + k.press_ms * MS, k.key_class, True, char=k.char if private else ""))
            evs.append(KeyEvent(t0 + k.release_ms * MS, k.key_class, False))
        for t, count, dist in plan.mouse_bins:
            evs.append(MouseBin(t0 + t * MS, count, dist))
        for t, button, down in plan.clicks:
            evs.append(MouseClick(t0 + t * MS, button, down))
        evs.sort(key=lambda e: e.t_ns)
        return [e for e in evs if e.t_ns < self.end_ns]

    # ------------------------------------------------------------------ audio
    def _make_chunk(self) -> None:
        c = self._frames_made // CHUNK_FRAMES
        k0 = c * CHUNK_FRAMES
        nf = min(CHUNK_FRAMES, self.n_frames - k0)
        fl = self.synth.frame_len
        agent, customer = self.synth.chunk(c, nf * fl)
        starts_ms = (k0 + np.arange(nf, dtype=np.int64)) * self.frame_ms
        w = self.click_window_ms
        lo = np.searchsorted(self._press_ms, starts_ms - w, side="left")
        hi = np.searchsorted(self._press_ms, starts_ms + self.frame_ms + w, side="left")
        near = hi > lo
        t = self.start_ns + (k0 + np.arange(nf, dtype=np.int64)) * self.frame_ns
        cust = self._customer.classify_block(customer[:nf * fl].reshape(nf, fl), t)
        agent_cols = self._agent.classify_block(agent[:nf * fl].reshape(nf, fl), t, near_key_press=near,
                                                customer_level_dbfs=cust["level_dbfs_x10"] / 10)
        af, cf = Batch(0, {"speech": agent_cols}).events(), Batch(0, {"speech": cust}).events()
        out = self._frames
        for a, c in zip(af, cf):
            out.append(a)
            out.append(c)
        self._frames_made = k0 + nf

    # ------------------------------------------------------------------ API
    def events_until(self, t_ns: int) -> list:
        """Every not-yet-returned event with time < t_ns (SpeechFrames: end <= t_ns), time-sorted."""
        t_ns = int(t_ns)
        out = []
        evs = self._events
        i = self._ev_next
        while i < len(evs) and evs[i].t_ns < t_ns:
            out.append(evs[i])
            i += 1
        self._ev_next = i
        if t_ns >= self.start_ns:
            k_end = min(self.n_frames, (t_ns - self.start_ns) // self.frame_ns)
        else:
            k_end = 0
        if k_end > self._frame_next:
            while self._frames_made < k_end:
                self._make_chunk()
            n = 2 * (k_end - self._frame_next)
            out.extend(self._frames[:n])
            del self._frames[:n]
            self._frame_next = k_end
        self._done_until = max(self._done_until, t_ns)
        out.sort(key=lambda e: e.t_ns)
        return out

    @property
    def finished(self) -> bool:
        """All events up to end_ns have been returned."""
        return self._ev_next >= len(self._events) and self._frame_next >= self.n_frames

    @property
    def position_ns(self) -> int:
        """The largest t_ns events_until was called with (start_ns before the first call)."""
        return self._done_until

    @property
    def complete_until(self) -> int | None:
        """Station time (ns) before which every event has been returned: ``position_ns``, less the
        frame that ends after it (a frame is returned once it has ended). None once finished
        (nothing more will ever come: no bound)."""
        if self.finished:
            return None
        if self._frame_next >= self.n_frames:
            return self._done_until
        return min(self._done_until, self.start_ns + self._frame_next * self.frame_ns)

    def progress(self) -> float:
        """Share of the scenario's time already returned (0..1)."""
        span = self.end_ns - self.start_ns
        return min(1.0, max(0.0, (self._done_until - self.start_ns) / span)) if span else 1.0

    def truth(self) -> dict[str, Any]:
        """Ground truth from the plan (see truth.py): plain JSON-able data, absolute ns."""
        return compute_truth(self.plan, self.cfg, self.start_ns, self._focus_cats)


def exam_scenario(cfg: Config, seed: int = 1, duration_s: float = 600.0, start_ns: int = 0) -> Scenario:
    return Scenario(cfg, seed=seed, duration_s=duration_s, start_ns=start_ns)
