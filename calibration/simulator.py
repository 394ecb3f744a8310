"""A calibration rig (or sound level meter) simulated on a pseudo-terminal, for tests and demos.

    python -m calibration.simulator [--mode MODE] [--sink SINK] [--sensitivity DB] [--meter]

Opens a pseudo-terminal pair, prints the device path of its terminal side (``/dev/pts/N``) as the
first line on stdout, then serves the calibrator protocol of ``docs/calibration.md`` on it until
killed. With ``--sink``, PLAY really sounds: the tone or the test sentence (espeak-ng, scaled to the
requested active level with this package's P.56) is played into that PulseAudio sink with
``paplay``, at ``dB SPL - sensitivity`` dBFS, as an artificial mouth would into the microphone.

Modes, to test the driver's failure handling: ``ok``; ``dead`` (reads, never answers);
``garbage`` (answers every command with binary junk); ``babble`` (floods lines that are not
replies); ``noeol`` (streams bytes without ever ending a line); ``disconnect`` (closes the port
after ``--after`` commands). ``--meter`` streams ``SPL <x> dB`` lines every 0.1 s instead.
"""

from __future__ import annotations

import argparse
import math
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import tty
import wave

import numpy as np


class Sound:
    """The rig's loudspeaker: paplay into a PulseAudio sink (or nothing without a sink)."""

    def __init__(self, sink: str | None, sensitivity: float, rate: int = 16000):
        self.sink, self.sensitivity, self.rate = sink, sensitivity, rate
        self.proc: subprocess.Popen | None = None
        self.signal = ("tone", 1000.0, 94.0)
        self.playing = False
        self._token = None
        self._lock = threading.Lock()
        self._speech_cache: np.ndarray | None = None
        if sink:
            import calibration.measure  # noqa: F401  (imports take a while on a busy machine)
            threading.Thread(target=self._speech, daemon=True).start()

    def _speech(self) -> np.ndarray:
        """The test sentence at 0 dB gain (cached: synthesised once, in the background at start)."""
        with self._lock:
            if self._speech_cache is None:
                with tempfile.TemporaryDirectory() as d:
                    wav = os.path.join(d, "s.wav")
                    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", wav,
                                    "Good morning, you are speaking with the customer service desk. "
                                    "How can I help you today?"], check=True, capture_output=True, timeout=30)
                    raw = subprocess.run(["sox", wav, "-r", str(self.rate), "-c", "1", "-b", "16", "-t", "raw", "-"],
                                         check=True, capture_output=True, timeout=30).stdout
                self._speech_cache = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            return self._speech_cache

    def _samples(self) -> np.ndarray:
        from calibration import measure, p56
        if self.signal[0] == "tone":
            _, hz, spl = self.signal
            return measure.tone(self.rate, 30.0, hz, spl - self.sensitivity)
        _, spl = self.signal
        x = self._speech()
        lev = p56.measure(x, self.rate).active_dbov
        gain = 10 ** ((spl - self.sensitivity - lev) / 20.0)
        lead = np.zeros(int(0.3 * self.rate))
        return np.clip(np.concatenate([lead, x.astype(np.float64) * gain]), -32768, 32767).astype(np.int16)

    def play(self) -> None:
        """Start playing in the background (the reply to PLAY does not wait for the sound)."""
        self.stop()
        self.playing = True
        if not self.sink:
            return
        token = self._token = object()

        def start():
            samples = self._samples()
            if token is not self._token or not self.playing:
                return
            # paplay reads the file as the server asks for data; pacat fed through a pipe faster
            # than it plays busy-loops at 100 % CPU while the pipe holds more than its buffer
            wav = tempfile.NamedTemporaryFile(prefix="rig-", suffix=".wav", delete=False)
            with wav, wave.open(wav, "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(self.rate)
                w.writeframes(samples.astype("<i2").tobytes())
            try:
                proc = subprocess.Popen(["paplay", "--latency-msec=20", "-d", self.sink, wav.name],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.proc = proc
                if token is not self._token:  # STOP arrived meanwhile
                    proc.kill()
                proc.wait()
            finally:
                os.unlink(wav.name)
        threading.Thread(target=start, daemon=True).start()

    def stop(self) -> None:
        self.playing = False
        self._token = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def spl(self) -> float:
        if self.playing and self.signal[0] == "tone":
            return self.signal[2]
        return 35.0  # quiet room


def handle(line: str, sound: Sound) -> str:
    parts = line.split()
    if not parts:
        return "ERR empty command"
    cmd, args = parts[0].upper(), parts[1:]
    try:
        if cmd == "ID?":
            return "OK StationLab,SIM-1,0001,1.0"
        if cmd == "TONE" and len(args) == 2:
            hz, spl = float(args[0]), float(args[1])
            if not (20 <= hz <= 20000 and 40 <= spl <= 130):
                return "ERR out of range"
            sound.signal = ("tone", hz, spl)
            return "OK"
        if cmd == "SPEECH" and len(args) == 1:
            spl = float(args[0])
            if not 40 <= spl <= 130:
                return "ERR out of range"
            sound.signal = ("speech", spl)
            return "OK"
        if cmd == "PLAY" and not args:
            sound.play()
            return "OK"
        if cmd == "STOP" and not args:
            sound.stop()
            return "OK"
        if cmd == "SPL?" and not args:
            return f"OK {sound.spl():.1f}"
    except ValueError:
        return "ERR bad number"
    return f"ERR unknown command {cmd}"


def serve(master: int, mode: str, after: int, sound: Sound) -> None:
    buf = b""
    served = 0
    while True:
        if mode in ("babble", "noeol"):
            out = b"@#%&*! babble babble\r\n" if mode == "babble" else b"x" * 64
            try:
                os.write(master, out)
            except OSError:
                time.sleep(0.05)
            time.sleep(0.01)
        r, _, _ = select.select([master], [], [], 0.01 if mode in ("babble", "noeol") else 0.5)
        if not r:
            continue
        try:
            chunk = os.read(master, 1024)
        except OSError:
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode("ascii", "replace").strip()
            if mode == "dead" or mode in ("babble", "noeol"):
                continue
            if mode == "disconnect" and served >= after:
                sound.stop()
                os.close(master)
                return
            served += 1
            reply = b"\x13\xfe#%!\xff junk\n" if mode == "garbage" else (handle(line, sound) + "\n").encode()
            os.write(master, reply)


def meter(master: int, level: float) -> None:
    k = 0
    while True:
        value = level + 0.2 * math.sin(k)
        try:
            os.write(master, f"SPL {value:.1f} dB\r\n".encode())
        except OSError:
            pass
        k += 1
        time.sleep(0.1)
        try:
            while select.select([master], [], [], 0)[0]:
                os.read(master, 1024)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calibration.simulator", description=__doc__.split("\n")[0])
    ap.add_argument("--mode", default="ok", choices=("ok", "dead", "garbage", "babble", "noeol", "disconnect"))
    ap.add_argument("--after", type=int, default=1, help="commands served before --mode disconnect closes")
    ap.add_argument("--sink", help="PulseAudio sink the rig's loudspeaker plays into")
    ap.add_argument("--sensitivity", type=float, default=120.0, help="dB SPL that reads 0 dBFS in the microphone")
    ap.add_argument("--meter", type=float, metavar="DBSPL", help="be a sound level meter streaming this level")
    args = ap.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    print(os.ttyname(slave), flush=True)
    sound = Sound(args.sink, args.sensitivity)
    try:
        if args.meter is not None:
            meter(master, args.meter)
        else:
            serve(master, args.mode, args.after, sound)
    except KeyboardInterrupt:
        pass
    finally:
        sound.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
