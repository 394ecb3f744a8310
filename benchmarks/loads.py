"""Synthetic exam-PC load for the capture benchmarks: xdotool input and focus on Xvfb, and
espeak-ng speech on the private PulseAudio's null sinks.

Profiles as in issue 3: office = 125 Hz mouse, 8 keys/s, a focus change every 5 s; stress =
1000 Hz mouse, 20 keys/s, a focus change every second. xdotool's own per-command cost caps the
mouse rate it reaches; the benchmarks measure and print the rate reached.
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np

PROFILES = {"office": {"mouse_hz": 125, "keys_hz": 8, "focus_s": 5.0},
            "stress": {"mouse_hz": 1000, "keys_hz": 20, "focus_s": 1.0}}

WINDOWS = (("crm-app", "CRM"), ("kb-wiki", "KB"), ("team-chat", "Chat"), ("typing-test", "T"))


class InputLoad:
    """Mouse, key and focus load from xdotool processes (threads of this process).

    - mouse: one ``xdotool`` per second chaining ``mousemove_relative DX DY sleep 1/rate`` (XTEST
      motion, back and forth; ``mousemove X Y`` would be a pointer warp, which XI2 raw events do
      not report);
    - keys: ``key <k>`` lines written to a long-running ``xdotool -`` at the profile's rate, each
      stamped (monotonic ns) just before the write, in ``key_t0``;
    - focus: one ``xdotool windowactivate --sync <wid>`` per change, stamped before the call, in
      ``focus_t0`` as (t_ns, window id).
    """

    def __init__(self, x, wins, profile: str):
        self.x, self.wins, self.prof = x, wins, PROFILES[profile]
        self.key_t0: list[int] = []
        self.focus_t0: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._key_sh = None

    def start(self) -> "InputLoad":
        self._key_sh = self.x.xdotool_shell()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._mouse, self._keys, self._focus)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self._key_sh is not None:
            self._key_sh.close()

    def _mouse(self) -> None:
        env, n = self.x.env, self.prof["mouse_hz"]
        period = 1.0 / n
        while not self._stop.is_set():
            args = []
            for i in range(n):
                sign = 1 if (i // 50) % 2 == 0 else -1   # 50 steps out, 50 back
                args += ["mousemove_relative", "--", str(7 * sign), str(3 * sign), "sleep", f"{period:.4f}"]
            subprocess.run(["xdotool", *args], env=env, timeout=30)

    def _keys(self) -> None:
        period = 1.0 / self.prof["keys_hz"]
        nxt = time.monotonic()
        i = 0
        while not self._stop.is_set():
            self.key_t0.append(self._key_sh.send(f"key {'abcdefghij'[i % 10]}"))
            i += 1
            nxt += period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def _focus(self) -> None:
        i = 1
        while not self._stop.wait(self.prof["focus_s"]):
            w = self.wins[i % len(self.wins)]
            self.focus_t0.append((time.monotonic_ns(), w.wid))
            # xdotool prints "XGetWindowProperty[_NET_ACTIVE_WINDOW] failed" when it polls during
            # the window manager's switch; the change still happens (the benchmarks count them)
            subprocess.run(["xdotool", "windowactivate", "--sync", str(w.wid)], env=self.x.env, timeout=10,
                           stderr=subprocess.DEVNULL)
            i += 1


class SpeechLoad:
    """espeak-ng sentences with pauses played in a loop into the agent and customer null sinks
    (customer 3 dB lower), so that the VAD sees speech as well as silence on both channels."""

    def __init__(self, pa, workdir):
        from pathlib import Path

        from tests.pulse_harness import espeak
        line = espeak("Thank you for calling, how can I help you today?", Path(workdir) / "speech.wav")
        self.loop = np.concatenate([line, np.zeros(16000, np.int16)] * 8)
        self.pa = pa
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)

    def start(self) -> "SpeechLoad":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _play(self) -> None:
        while not self._stop.is_set():
            pbs = self.pa.play_together([("agent", self.loop, 0.0), ("customer", self.loop, -3.0)])
            for pb in pbs:
                while pb.proc.poll() is None and not self._stop.is_set():
                    time.sleep(0.1)
                pb.kill()
