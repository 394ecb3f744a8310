"""Rebuild the speech corpus of this folder and its ground truth (``spans.json``).

Not run by the tests: it documents exactly how the committed files were made (SOURCES.md says
where the inputs come from and under which licence). Usage, with the two sources unpacked::

    python tests/data/corpus/make_corpus.py POCKETSPHINX_SDIST_DIR ALSA_UTILS_ROOT

Every output is 16 kHz mono 16-bit FLAC (sox resamples the 48 kHz ALSA files). Ground truth per
file: 10 ms windows whose RMS level is above ``max(noise + 10 dB, active - 40 dB)`` (noise = the
10th percentile of the file's 10 ms window levels, active = its ITU-T P.56 active speech level,
``calibration.p56``), pauses shorter than 50 ms bridged, spans shorter than 30 ms dropped; each
file's spans were checked against the pocketsphinx forced alignment where one exists (the
``librivox_*`` files: 10 ms grid F1, printed and stored as ``alignment_f1``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
from calibration.p56 import measure  # noqa: E402

RATE = 16000
WIN = RATE // 100


def truth_spans(x: np.ndarray) -> list[list[int]]:
    """Speech spans [start_ms, end_ms) of int16 samples x at 16 kHz (see the module docstring)."""
    n = len(x) // WIN
    level = 10 * np.log10(np.maximum(np.mean(x[: n * WIN].astype(np.float64).reshape(n, WIN) ** 2, axis=1), 1e-3)
                          / 32768 ** 2)
    thr = max(float(np.percentile(level, 10)) + 10.0, measure(x, RATE).active_dbov - 40.0)
    spans: list[list[int]] = []
    for i in np.flatnonzero(level > thr):
        s, e = int(i) * 10, int(i) * 10 + 10
        if spans and s - spans[-1][1] < 50:
            spans[-1][1] = e
        else:
            spans.append([s, e])
    return [sp for sp in spans if sp[1] - sp[0] >= 30]


def grid(spans, total_ms):
    g = np.zeros(total_ms // 10, dtype=bool)
    for s, e in spans:
        g[s // 10: e // 10] = True
    return g


def main(ps_dir: str, alsa_root: str) -> None:
    data = Path(ps_dir) / "test" / "data"
    alsa = Path(alsa_root) / "usr" / "share" / "sounds" / "alsa"
    made: list[tuple[str, list[str], str, str]] = []
    for n in ("0870", "0880", "0890", "0920", "0930"):
        made.append((f"librivox_{n}", [str(data / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.wav")],
                     "librivox", str(data / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.json")))
    for n in ("goforward", "numbers", "something"):
        made.append((f"cmu_{n}", ["-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                                  str(data / f"{n}.raw")], "cmu", ""))
    for n in ("Front_Left", "Front_Right", "Front_Center", "Rear_Left", "Rear_Right", "Rear_Center",
              "Side_Left", "Side_Right"):
        made.append((f"alsa_{n.lower()}", [str(alsa / f"{n}.wav")], "alsa", ""))
    out = {}
    for name, src, speaker, align in made:
        path = HERE / f"{name}.flac"
        subprocess.run(["sox", *src, "-r", str(RATE), "-b", "16", "-c", "1", str(path)], check=True)
        x, rate = sf.read(path, dtype="int16")
        spans = truth_spans(x)
        total_ms = len(x) * 1000 // RATE
        entry = {"speaker": speaker, "duration_ms": total_ms, "active_dbfs": round(measure(x, RATE).active_dbov, 2),
                 "spans_ms": spans}
        if align:
            words = json.loads(Path(align).read_text())["w"]
            ref = [[round(w["b"] * 1000), round((w["b"] + w["d"]) * 1000)] for w in words if w["t"] != "<sil>"]
            a, b = grid(spans, total_ms), grid(ref, total_ms)
            entry["alignment_f1"] = round(2 * np.sum(a & b) / max(1, np.sum(a) + np.sum(b)), 3)
        out[name] = entry
        print(name, entry.get("alignment_f1", ""), len(spans), "spans", total_ms, "ms")
    (HERE / "spans.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
