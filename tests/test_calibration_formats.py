"""`station calibrate level` on every kind of file a recorder writes (issue 18): 8/16/24/32-bit
integer and 32/64-bit float WAV, WAVE_FORMAT_EXTENSIBLE, FLAC, rates from 8 to 96 kHz, stereo
with the speech on either channel. Each must read within 0.5 dB of the 16-bit 16 kHz original,
and our P.56 must agree within 0.5 dB with VOICEBOX's independent ``activlev`` on the very
samples it measured.

Files are made two independent ways: sox (what exam centres use; it writes WAVE_FORMAT_EXTENSIBLE
for more than 16 bits or 2 channels) and libsndfile through soundfile (every subtype). Resampling
for the test files is done by sox, not by the code under test.
"""

import json
import subprocess

import numpy as np
import pytest
import soundfile
from pyvoicebox.v_activlev import v_activlev  # test dependency (pyproject [test])

from calibration import audiofile
from calibration.cli import level_report
from tests.support import require, station_cmd

TEXT = ("Good morning, customer service, you are speaking with Anna. How can I help you? "
        "I would like to change the delivery address of my order.")
RATES = [8000, 16000, 22050, 44100, 48000, 96000]
SUBTYPES = [("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
            ("WAV", "FLOAT"), ("WAV", "DOUBLE"), ("WAVEX", "PCM_16"), ("WAVEX", "PCM_24"),
            ("WAVEX", "PCM_32"), ("WAVEX", "FLOAT"), ("FLAC", "PCM_16"), ("FLAC", "PCM_24"),
            ("RF64", "PCM_24")]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """The 16-bit 16 kHz mono original (espeak-ng speech with pauses) and its level figures."""
    require("espeak-ng", "sox")
    d = tmp_path_factory.mktemp("formats")
    subprocess.run(["espeak-ng", "-w", str(d / "raw.wav"), TEXT], check=True, timeout=60)
    src = d / "orig16.wav"
    subprocess.run(["sox", str(d / "raw.wav"), "-r", "16000", "-c", "1", "-b", "16", str(src),
                    "gain", "-6", "pad", "0.5", "1.5"], check=True, timeout=60)
    rec = audiofile.read(src)
    assert rec.format == "WAV PCM_16" and rec.rate == 16000
    return d, src, level_report(rec.samples, rec.rate)


def _sox(src, dst, *opts):
    subprocess.run(["sox", str(src), *opts, str(dst)], check=True, timeout=60)


def _check(rec, ref, what):
    rep = level_report(rec.samples, rec.rate)
    lev, _ = v_activlev(rec.samples, rec.rate, "d0h")
    ours = rep["active_level_dbfs"]
    print(f"{what}: {rec.format} {rec.file_rate} Hz -> {rec.rate} Hz: {ours:.2f} dBFS "
          f"(original {ref['active_level_dbfs']:.2f}, activlev {float(lev):.2f})")
    assert abs(ours - ref["active_level_dbfs"]) <= 0.5, what
    assert abs(ours - float(lev)) <= 0.5, what
    return rep


@pytest.mark.real
@pytest.mark.parametrize("rate", RATES)
def test_sox_written_files_at_every_rate(original, rate):
    """sox's 24-bit stereo (WAVE_FORMAT_EXTENSIBLE), 32-bit float and FLAC files, the speech on
    the right channel and a louder tone on the left."""
    d, src, ref = original
    up = d / f"mono{rate}.wav"
    _sox(src, up, "-r", str(rate))
    tone = d / f"tone{rate}.wav"
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(tone), "synth",
                    str(soundfile.info(str(up)).duration), "sine", "440", "gain", "-3"],
                   check=True, timeout=60)
    for name, opts in (("s24.wav", ["-b", "24"]), ("f32.wav", ["-e", "floating-point", "-b", "32"]),
                       ("s16.flac", ["-b", "16"]), ("s24.flac", ["-b", "24"])):
        out = d / f"{rate}-{name}"
        subprocess.run(["sox", "-M", str(tone), str(up), *opts, str(out)], check=True, timeout=60)
        rec = audiofile.read(out, channel=1)
        assert rec.channels == 2 and rec.file_rate == rate
        assert rec.rate == min(max(rate, 8000), 48000)
        if name == "s24.wav":
            assert rec.format == "WAVEX PCM_24"  # the format the hand-written reader refused
        _check(rec, ref, f"sox {name} {rate} Hz")
        left = level_report(audiofile.read(out, channel=0).samples, rec.rate)
        assert abs(left["long_term_level_dbfs"] - (-6.0)) < 0.3  # the tone channel is a different signal


@pytest.mark.real
@pytest.mark.parametrize("container,subtype", SUBTYPES)
def test_every_libsndfile_subtype(original, tmp_path, container, subtype):
    d, src, ref = original
    x, rate = soundfile.read(str(src), dtype="float64")
    for r in (16000, 48000):
        y = x
        if r != rate:
            up = tmp_path / f"up{r}.wav"
            _sox(src, up, "-r", str(r))
            y, _ = soundfile.read(str(up), dtype="float64")
        stereo = np.column_stack([np.zeros_like(y), y])
        out = tmp_path / f"f{r}.{'flac' if container == 'FLAC' else 'wav'}"
        soundfile.write(str(out), stereo, r, subtype=subtype, format=container)
        rec = audiofile.read(out, channel=1)
        assert rec.format == f"{container} {subtype}"
        _check(rec, ref, f"{container} {subtype} {r} Hz")


@pytest.mark.real
def test_cli_reads_the_issue_file_and_says_what_it_read(original):
    """The file of the issue: 48 kHz stereo 24-bit WAVE_FORMAT_EXTENSIBLE (format tag 65534)."""
    d, src, ref = original
    out = d / "issue.wav"
    _sox(src, out, "-r", "48000", "-c", "2", "-b", "24")
    assert int.from_bytes(out.read_bytes()[20:22], "little") == 0xFFFE  # WAVE_FORMAT_EXTENSIBLE
    r = subprocess.run(station_cmd("calibrate", "level", str(out), "--channel", "1", "--json"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert abs(rep["active_level_dbfs"] - ref["active_level_dbfs"]) <= 0.5
    assert rep["file_format"] == "WAVEX PCM_24" and rep["channels"] == 2 and rep["sample_rate_hz"] == 48000
    r = subprocess.run(station_cmd("calibrate", "level", str(out)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "WAVEX PCM_24" in r.stdout and "at 48000 Hz" in r.stdout
    hi = d / "hi.flac"
    _sox(src, hi, "-r", "96000", "-b", "24")
    r = subprocess.run(station_cmd("calibrate", "level", str(hi)), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "resampled from 96000 Hz" in r.stdout, r.stdout + r.stderr


def test_bad_files_and_channels_are_one_line_each(tmp_path):
    soundfile.write(str(tmp_path / "st.wav"), np.zeros((100, 2)), 16000, subtype="PCM_24")
    soundfile.write(str(tmp_path / "nan.wav"), np.array([0.1, np.nan, 0.2]), 16000, subtype="FLOAT")
    (tmp_path / "text.flac").write_text("hello")
    (tmp_path / "dir.wav").mkdir()
    cases = [(["st.wav", "--channel", "2"], 1, "has 2 channel(s) (0..1); channel 2 does not exist"),
             (["st.wav", "--channel", "-1"], 2, "invalid channel number"),
             (["st.wav", "--channel", "left"], 2, "invalid channel number"),
             (["text.flac"], 1, "not a WAV, FLAC or other audio file"),
             (["dir.wav"], 1, "is a directory"),
             (["nan.wav"], 1, "NaN or infinite"),
             (["missing.flac"], 1, "file not found")]
    for argv, code, message in cases:
        argv = [str(tmp_path / argv[0]), *argv[1:]]
        r = subprocess.run(station_cmd("calibrate", "level", *argv), capture_output=True, text=True, timeout=60)
        assert r.returncode == code and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
