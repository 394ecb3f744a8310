"""Rebuild the speech corpus of this folder and its ground truth (``spans.json``).

Not run by the tests: it documents exactly how the committed files were made (SOURCES.md says
where the inputs come from and under which licence). Usage, with the two sources unpacked::

    python tests/data/corpus/make_corpus.py POCKETSPHINX_SDIST_DIR ALSA_UTILS_ROOT

Every output is 16 kHz mono 16-bit FLAC (sox resamples the 48 kHz ALSA files). Ground truth per
file, a two-threshold (hysteresis) energy segmentation of the clean recording on 10 ms windows:
a span starts from windows whose RMS level is above ``max(noise + 10 dB, active - 40 dB)`` (noise =
the 10th percentile of the file's 10 ms window levels, active = its ITU-T P.56 active speech
level, ``calibration.p56``) and grows outwards, window by window, while the level averaged over 30
ms (the window and its two neighbours) stays above ``noise + 6 dB``; then pauses shorter than 50
ms are bridged and spans shorter than 30 ms dropped. The second threshold keeps the soft ends of
words (a final nasal, a fricative) that lie between 6 and 10 dB above the recording's background:
the first version (one threshold) cut the last word of ``librivox_0870`` ("them", 130 ms), which
showed as a 100 ms "late offset" of every detector. Each file's spans are checked against the
pocketsphinx forced word alignment where one exists (the ``librivox_*`` files,
``librivox_alignment.json``): 10 ms grid F1 (``alignment_f1``) and the differences (ms) of the
first onset and last offset (``alignment_edges_ms``), printed and stored.

``--spans-only`` recomputes ``spans.json`` from the committed FLAC files (the sources are not
needed for that)::

    python tests/data/corpus/make_corpus.py --spans-only
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


HIGH_DB = 10.0   # seed threshold above the noise (dB)
LOW_DB = 6.0     # growth threshold above the noise (dB), on 30 ms averages


def truth_spans(x: np.ndarray) -> list[list[int]]:
    """Speech spans [start_ms, end_ms) of int16 samples x at 16 kHz (see the module docstring)."""
    n = len(x) // WIN
    energy = np.mean(x[: n * WIN].astype(np.float64).reshape(n, WIN) ** 2, axis=1)
    level = 10 * np.log10(np.maximum(energy, 1e-3) / 32768 ** 2)
    smooth = 10 * np.log10(np.maximum(np.convolve(energy, np.ones(3) / 3, mode="same"), 1e-3) / 32768 ** 2)
    noise = float(np.percentile(level, 10))
    keep = level > max(noise + HIGH_DB, measure(x, RATE).active_dbov - 40.0)
    low = noise + LOW_DB
    for i in range(1, n):               # grow forwards, then backwards, while above the low threshold
        keep[i] |= keep[i - 1] and smooth[i] > low
    for i in range(n - 2, -1, -1):
        keep[i] |= keep[i + 1] and smooth[i] > low
    spans: list[list[int]] = []
    for i in np.flatnonzero(keep):
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


def entry_for(name: str, speaker: str, words: list | None) -> dict:
    """spans.json's entry for a committed FLAC file (words: its forced alignment, or None)."""
    x, rate = sf.read(HERE / f"{name}.flac", dtype="int16")
    assert rate == RATE
    spans = truth_spans(x)
    total_ms = len(x) * 1000 // RATE
    entry = {"speaker": speaker, "duration_ms": total_ms, "active_dbfs": round(measure(x, RATE).active_dbov, 2),
             "spans_ms": spans}
    if words:
        ref = [[b, e] for _w, b, e in words]
        a, b = grid(spans, total_ms), grid(ref, total_ms)
        entry["alignment_f1"] = round(float(2 * np.sum(a & b) / max(1, np.sum(a) + np.sum(b))), 3)
        entry["alignment_edges_ms"] = [spans[0][0] - ref[0][0], spans[-1][1] - ref[-1][1]]
    print(name, entry.get("alignment_f1", ""), entry.get("alignment_edges_ms", ""), len(spans), "spans", total_ms, "ms")
    return entry


def speakers() -> dict[str, str]:
    return {f.stem: f.stem.split("_")[0] for f in sorted(HERE.glob("*.flac"))}


def write_spans() -> None:
    words = json.loads((HERE / "librivox_alignment.json").read_text())["words"]
    out = {name: entry_for(name, speaker, words.get(name)) for name, speaker in speakers().items()}
    old = json.loads((HERE / "spans.json").read_text()) if (HERE / "spans.json").exists() else {}
    out = {name: out[name] for name in old if name in out} | out     # keep the committed order
    (HERE / "spans.json").write_text(json.dumps(out, indent=1) + "\n")


def main(ps_dir: str, alsa_root: str) -> None:
    data = Path(ps_dir) / "test" / "data"
    alsa = Path(alsa_root) / "usr" / "share" / "sounds" / "alsa"
    made: list[tuple[str, list[str]]] = []
    for n in ("0870", "0880", "0890", "0920", "0930"):
        made.append((f"librivox_{n}", [str(data / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.wav")]))
    for n in ("goforward", "numbers", "something"):
        made.append((f"cmu_{n}", ["-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                                  str(data / f"{n}.raw")]))
    for n in ("Front_Left", "Front_Right", "Front_Center", "Rear_Left", "Rear_Right", "Rear_Center",
              "Side_Left", "Side_Right"):
        made.append((f"alsa_{n.lower()}", [str(alsa / f"{n}.wav")]))
    for name, src in made:
        subprocess.run(["sox", *src, "-r", str(RATE), "-b", "16", "-c", "1", str(HERE / f"{name}.flac")], check=True)
    write_spans()


if __name__ == "__main__":
    if sys.argv[1:] == ["--spans-only"]:
        write_spans()
    elif len(sys.argv) == 3:
        main(*sys.argv[1:3])
    else:
        sys.exit("usage: make_corpus.py POCKETSPHINX_SDIST_DIR ALSA_UTILS_ROOT | --spans-only")
