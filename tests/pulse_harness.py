"""A private PulseAudio server for tests: null sinks, playback, recording, device loss.

``PulseServer`` starts ``pulseaudio`` as a child process (also as root, which PulseAudio allows
with a warning when it is not in system mode) in a temporary directory of its own: its own HOME,
XDG_RUNTIME_DIR, native socket, client.conf (``autospawn = no``) and no default.pa (``-n``), so it
never touches a user's or the system's sound server. It creates one null sink per name (by default
``agent`` and ``customer``); whatever is played into a sink can be captured from its monitor
source ``<sink>.monitor``.

How PortAudio reaches it: Debian's libportaudio2 (19.6) has no PulseAudio host API, so capture goes
through ALSA's ``pulse`` plugin (package libasound2-plugins). The harness writes an ALSA config
file that defines, for each sink, a PCM named ``<sink>_monitor`` (type pulse, device
``<sink>.monitor``, server = this server's socket) and a PCM ``<sink>_sink`` for playback into it,
and points ``ALSA_CONFIG_PATH`` at the system ``alsa.conf`` plus that file. After ``activate()``
(or in a child process started with ``env``), ``sounddevice`` lists ``agent_monitor`` and
``customer_monitor`` as input devices: set ``audio.agent_device = "agent_monitor"`` etc.

Null sinks render in large blocks (up to 2 s) while nobody asks for low latency, which delays the
first block a new recording stream gets by up to 2 s. The harness therefore keeps one
low-latency recorder (``parec --latency-msec=10``, its samples discarded by a ``cat`` process of
its own) on each monitor, which keeps the sink's render block short, as a real sound card's timer
would (or a softphone recording the same headset at low latency).

Usage::

    with PulseServer() as pa:
        pa.activate()                     # os.environ + PortAudio re-initialised
        p = pa.play("agent", samples)     # int16 mono at pa.rate, returns a Playback
        p.wait()
        pa.unload_sink("agent"); pa.load_sink("agent")   # device loss and return

Failure modes: ``PulseError`` when the server does not start within ``start_timeout`` s (the
server log is in the message) or a pactl command fails. ``stop()`` ends every child process it
started (players, keep-alive recorders, the server) and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"


def _raise_priority() -> None:
    """In a player child: run ahead of the (busy) test machine's other work, when allowed."""
    try:
        os.nice(-10)
    except OSError:
        pass


class PulseError(RuntimeError):
    """The private PulseAudio server could not be started or driven."""


def db_to_gain(db: float) -> float:
    """Amplitude factor for a gain in dB (e.g. -25 dB -> 0.056)."""
    return float(10.0 ** (db / 20.0))


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a mono or multi-channel 16-bit WAV file; returns (int16 mono samples, rate in Hz).
    Multi-channel files are reduced to their first channel."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
        return data.astype(np.int16), w.getframerate()


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """Write int16 mono samples as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """int16 samples scaled by gain_db (dB), clipped to the int16 range."""
    x = np.asarray(samples, dtype=np.float64) * db_to_gain(gain_db)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def write_paced(fd: int, data: bytes, bytes_per_s: float, lead_s: float, stop: threading.Event,
                chunk: int = 640) -> None:
    """Write data to a player's input at the pace it plays, at most lead_s ahead (keep lead_s
    below the player's buffer). pacat busy-loops at 100 % CPU while its input holds more than
    its buffer can take, so samples must not be handed over all at once: two such players would
    keep a 2-core machine saturated, and every test and benchmark on it would measure a busy
    machine. Returns when all is written, when stop is set, or when the reader has gone."""
    t0 = time.monotonic()
    pos = 0
    try:
        while pos < len(data) and not stop.is_set():
            wait = t0 + pos / bytes_per_s - lead_s - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return
            pos += os.write(fd, data[pos:pos + chunk])
    except OSError:
        pass


class Playback:
    """One ``pacat`` process playing raw int16 mono samples into a sink.

    start_ns: station-clock time (time.monotonic_ns) at which the samples were handed to pacat;
    the sound reaches the sink's monitor a little later (pacat and server buffering).
    """

    def __init__(self, proc: subprocess.Popen, data: bytes, log: Path | None = None, rate: int = 16000,
                 lead_s: float = 0.25):
        self.proc = proc
        self._data = data
        self.rate = rate
        self.lead_s = lead_s
        self._stop = threading.Event()
        self.log = log
        self.start_ns: int | None = None
        self._writer: threading.Thread | None = None

    def _feed(self) -> None:
        """Hand the samples over at the pace they play, lead_s ahead (less than pacat's buffer;
        pacat spins at 100 % CPU on input it cannot take yet: see write_paced)."""
        try:
            write_paced(self.proc.stdin.fileno(), self._data, 2 * self.rate, self.lead_s, self._stop)
        finally:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def begin(self) -> None:
        """Start handing the samples to pacat (a thread paces them: see _feed)."""
        self.start_ns = time.monotonic_ns()
        self._writer = threading.Thread(target=self._feed, daemon=True)
        self._writer.start()

    def wait(self, timeout: float = 60.0) -> int:
        """Wait until pacat has played everything; returns its exit code."""
        if self._writer is not None:
            self._writer.join(timeout)
        return self.proc.wait(timeout)

    def underruns(self) -> int:
        """How often pacat ran dry (each shifts the rest of the sound later); valid after wait()."""
        try:
            text = self.log.read_text(errors="replace") if self.log else ""
        except OSError:
            return 0
        # pacat always "underruns" once while draining after the end of its input: not counted
        return text.split("Got EOF")[0].count("Stream underrun")

    def kill(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class _Daemon:
    """One pulseaudio process in its own directory (HOME, runtime dir, socket, log)."""

    def __init__(self, root: Path, name: str):
        self.dir = root / name
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "runtime" / "native"

    @property
    def server(self) -> str:
        return f"unix:{self.socket}"

    def start(self, client_conf: Path, timeout: float) -> None:
        for sub in ("home", "runtime", "state"):
            (self.dir / sub).mkdir(mode=0o700, parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "DBUS_", "ALSA_"))}
        env.pop("DISPLAY", None)
        env.update(HOME=str(self.dir / "home"), XDG_RUNTIME_DIR=str(self.dir / "runtime"),
                   XDG_CONFIG_HOME=str(self.dir / "home"), XDG_STATE_HOME=str(self.dir / "state"),
                   PULSE_STATE_PATH=str(self.dir / "state"), PULSE_RUNTIME_PATH=str(self.dir / "runtime"),
                   PULSE_CLIENTCONFIG=str(client_conf))
        # -n: no default.pa (no hardware detection, no system modules); as root PulseAudio only warns.
        cmd = ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=false",
               "--disallow-module-loading=false", "--realtime=no", "--high-priority=yes",
               "--log-level=notice", f"--log-target=file:{self.dir / 'pulse.log'}",
               "-L", f"module-native-protocol-unix socket={self.socket} auth-anonymous=1"]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PulseError(f"pulseaudio exited with {self.proc.returncode}: {self.log_tail()}")
            if self.socket.exists() and self.pactl(client_conf, "info", check=False).returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PulseError(f"pulseaudio did not answer within {timeout} s: {self.log_tail()}")
            time.sleep(0.05)

    def pactl(self, client_conf: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "PULSE_SERVER": self.server, "PULSE_CLIENTCONFIG": str(client_conf)}
        proc = subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=10)
        if check and proc.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 20) -> str:
        try:
            return " | ".join((self.dir / "pulse.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class PulseServer:
    """Private PulseAudio server(s) with null sinks (see the module docstring).

    sinks: null sink names to create. rate (Hz) / channels: the sinks' sample spec; 16 kHz mono
    avoids resampling anywhere. start_timeout: seconds to wait for a server to answer.
    separate: one pulseaudio process per sink instead of one for all. Use it for device-loss
    tests: PulseAudio moves a recording stream whose source disappears to another source of the
    same server (so a vanished "agent" monitor would silently become the "customer" monitor);
    with a server per sink there is no other source, the stream ends, as on a real unplugged
    device. One server (the default) allows routing between sinks (e.g. module-loopback).
    """

    def __init__(self, sinks: tuple[str, ...] = ("agent", "customer"), rate: int = 16000,
                 channels: int = 1, start_timeout: float = 10.0, separate: bool = False):
        self.sink_names = tuple(sinks)
        self.rate = rate
        self.channels = channels
        self.start_timeout = start_timeout
        self.separate = separate
        self.dir: Path | None = None
        self._daemons: dict[str, _Daemon] = {}     # sink name -> its server
        self.modules: dict[str, int] = {}          # sink name -> module index
        self._keepalive: dict[str, subprocess.Popen] = {}
        self._players: list[Playback] = []
        self._env_patch: pytest.MonkeyPatch | None = None   # while activated

    # -- paths and environment ------------------------------------------------------------

    def server(self, sink: str | None = None) -> str:
        """The PULSE_SERVER value of the server holding ``sink`` (default: the first sink's)."""
        return self._daemons[sink or self.sink_names[0]].server

    def server_pid(self, sink: str | None = None) -> int:
        """The process id of the server holding ``sink`` (default: the first sink's), e.g. to
        freeze it (SIGSTOP) as a candidate could."""
        return self._daemons[sink or self.sink_names[0]].proc.pid

    @property
    def client_conf(self) -> Path:
        return self.dir / "client.conf"

    @property
    def alsa_conf(self) -> Path:
        return self.dir / "asound.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that make ALSA/PortAudio see the ``<sink>_monitor`` devices (and
        PulseAudio clients use the first sink's server, never a user's or the system's). Merge
        into os.environ (``activate``) or pass to a child process."""
        return {
            "PULSE_SERVER": self.server(),
            "PULSE_CLIENTCONFIG": str(self.client_conf),
            "ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{self.alsa_conf}",
        }

    def child_env(self, sink: str | None = None) -> dict[str, str]:
        """os.environ plus ``env`` (PULSE_SERVER of ``sink``'s server): for subprocesses."""
        return {**os.environ, **self.env, "PULSE_SERVER": self.server(sink)}

    @staticmethod
    def monitor_device(sink: str) -> str:
        """The PortAudio/ALSA input device name that captures ``sink``'s monitor."""
        return f"{sink}_monitor"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "PulseServer":
        """Start the server(s) and create the sinks. Raises PulseError on failure (after
        stopping whatever was started)."""
        if not Path(SYSTEM_ALSA_CONF).exists():
            raise PulseError(f"{SYSTEM_ALSA_CONF} missing (is libasound2 installed?)")
        self.dir = Path(tempfile.mkdtemp(prefix="station-pulse-"))
        self.client_conf.write_text("autospawn = no\n")
        try:
            groups = [(n, (n,)) for n in self.sink_names] if self.separate else [("pulse", self.sink_names)]
            for dname, names in groups:
                daemon = _Daemon(self.dir, dname)
                daemon.start(self.client_conf, self.start_timeout)
                for n in names:
                    self._daemons[n] = daemon
            self._write_alsa_conf()
            for name in self.sink_names:
                self.load_sink(name)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop players, keep-alive recorders and the server(s) (SIGTERM, then SIGKILL after 5 s);
        restore os.environ if ``activate`` changed it; remove the directory."""
        for p in self._players:
            p.kill()
        self._players.clear()
        for name in list(self._keepalive):
            self._stop_keepalive(name)
        for daemon in set(self._daemons.values()):
            daemon.stop()
        self._daemons.clear()
        self.deactivate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PulseServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, n: int = 20) -> str:
        """The last lines of every server's log, for error messages."""
        return " || ".join(d.log_tail(n) for d in set(self._daemons.values()))

    def activate(self) -> None:
        """Point this process at the server(s): set ``env`` in os.environ and re-initialise
        PortAudio (if sounddevice is imported) so that it lists the ``<sink>_monitor`` devices."""
        if self._env_patch is None:
            self._env_patch = pytest.MonkeyPatch()
        for k, v in self.env.items():
            self._env_patch.setenv(k, v)
        refresh_portaudio()

    def deactivate(self) -> None:
        """Undo ``activate`` (restore the environment, re-initialise PortAudio)."""
        if self._env_patch is None:
            return
        self._env_patch.undo()
        self._env_patch = None
        refresh_portaudio()

    # -- pactl --------------------------------------------------------------------------------

    def pactl(self, *args: str, sink: str | None = None) -> str:
        """Run a pactl command against the server holding ``sink`` (default: the first);
        returns its stdout. Raises PulseError."""
        return self._daemons[sink or self.sink_names[0]].pactl(self.client_conf, *args).stdout

    def load_module(self, name: str, *args: str, sink: str | None = None) -> int:
        """Load a module (on ``sink``'s server); returns its index."""
        return int(self.pactl("load-module", name, *args, sink=sink).strip())

    def unload_module(self, index: int, sink: str | None = None) -> None:
        self.pactl("unload-module", str(index), sink=sink)

    def load_sink(self, name: str) -> int:
        """Create the null sink ``name`` (monitor ``name.monitor``) and its keep-alive recorder;
        returns when the monitor delivers data."""
        idx = self.load_module("module-null-sink", f"sink_name={name}", f"rate={self.rate}",
                               f"channels={self.channels}", f"sink_properties=device.description={name}",
                               sink=name)
        self.modules[name] = idx
        self._start_keepalive(name)
        return idx

    def unload_sink(self, name: str) -> None:
        """Remove the null sink ``name``: its monitor disappears (a device loss for capture)."""
        self._stop_keepalive(name)
        self.unload_module(self.modules.pop(name), sink=name)

    def sinks(self) -> list[str]:
        """Names of the sinks that exist now (on all servers)."""
        out = []
        for daemon in dict.fromkeys(self._daemons.values()):
            text = daemon.pactl(self.client_conf, "list", "short", "sinks").stdout
            out += [line.split("\t")[1] for line in text.splitlines() if line]
        return out

    def _start_keepalive(self, name: str, timeout: float = 5.0) -> None:
        """Start the low-latency recorder on ``name.monitor`` and wait (at most ``timeout`` s)
        until it receives data, i.e. until the null sink renders in short blocks."""
        # The samples are discarded by `cat` in a process of its own: draining 100 blocks/s in
        # this process would add about 1 % of a core per monitor to whatever a benchmark measures here. `head`
        # passes the first 50 ms to us, which tells that the monitor is flowing.
        parec = " ".join(["parec", "--latency-msec=10", "--format=s16le", f"--rate={self.rate}",
                          "--channels=1", "-d", f"{name}.monitor"])
        first = self.rate // 10  # 50 ms of s16 samples
        proc = subprocess.Popen(
            ["sh", "-c", f"{parec} | {{ head -c {first}; exec cat >/dev/null; }}"],
            env=self.child_env(name), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self._keepalive[name] = proc
        flowing = threading.Event()

        def wait_first_block() -> None:
            total = 0
            while total < first:
                chunk = proc.stdout.read1(4096)
                if not chunk:
                    return
                total += len(chunk)
            flowing.set()

        threading.Thread(target=wait_first_block, name=f"keepalive-{name}", daemon=True).start()
        # A new null sink renders its first block of 2 s before it heeds the recorder's latency;
        # suspending and resuming it once the recorder is connected restarts it in short blocks.
        deadline = time.monotonic() + timeout
        while not self._monitor_has_output(name):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise PulseError(f"keep-alive recorder on {name}.monitor did not connect: {self.log_tail()}")
            time.sleep(0.02)
        self.pactl("suspend-sink", name, "1", sink=name)
        self.pactl("suspend-sink", name, "0", sink=name)
        if not flowing.wait(max(0.1, deadline - time.monotonic())):
            raise PulseError(f"no data from {name}.monitor within {timeout} s: {self.log_tail()}")

    def _monitor_has_output(self, name: str) -> bool:
        """Whether a recording stream is connected to ``name.monitor``."""
        sources = self.pactl("list", "short", "sources", sink=name)
        idx = [line.split("\t")[0] for line in sources.splitlines() if line.split("\t")[1:2] == [f"{name}.monitor"]]
        outputs = self.pactl("list", "short", "source-outputs", sink=name)
        return bool(idx) and any(line.split("\t")[1:2] == idx for line in outputs.splitlines())

    def stop_keepalives(self) -> None:
        """Stop the keep-alive recorders of all sinks (e.g. once the client under test records:
        the sinks then render at the latency their remaining clients ask for). A sink loaded
        again afterwards gets a new one."""
        for name in list(self._keepalive):
            self._stop_keepalive(name)

    def _stop_keepalive(self, name: str) -> None:
        """End the keep-alive pipeline (its own process group: sh, parec, cat)."""
        proc = self._keepalive.pop(name, None)
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.stdout is not None:
            proc.stdout.close()

    # -- ALSA routing --------------------------------------------------------------------------

    def _write_alsa_conf(self) -> None:
        lines = ["# written by tests/pulse_harness.py: ALSA PCMs routed to private PulseAudio servers"]
        for name in self.sink_names:
            server = self.server(name)
            lines.append(f'pcm.{name}_monitor {{ type pulse; device "{name}.monitor"; server "{server}" }}')
            lines.append(f'pcm.{name}_sink {{ type pulse; device "{name}"; server "{server}" }}')
        self.alsa_conf.write_text("\n".join(lines) + "\n")

    # -- playback and recording ----------------------------------------------------------------

    def prepare(self, sink: str, samples: np.ndarray, gain_db: float = 0.0, rate: int | None = None,
                latency_ms: int = 300) -> Playback:
        """Start a pacat process for ``sink`` without sending it data yet (``Playback.begin``).
        samples: int16 mono at ``rate`` (default the sinks' rate), scaled by gain_db (dB).
        latency_ms: pacat's buffer; generous, so that a busy machine does not make it underrun
        (an underrun shifts the rest of the sound later). ``begin`` hands the samples over
        at the pace they play, 0.8 * latency_ms ahead (see Playback._feed)."""
        rate = rate or self.rate
        data = apply_gain(samples, gain_db).astype("<i2").tobytes()
        log = Path(tempfile.mkstemp(prefix="pacat-", suffix=".log", dir=self.dir)[1])
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                ["pacat", "-v", "--playback", "--raw", "--format=s16le", f"--rate={rate}", "--channels=1",
                 f"--latency-msec={latency_ms}", "-d", sink],
                env=self.child_env(sink), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                preexec_fn=_raise_priority)
        pb = Playback(proc, data, log, rate, lead_s=0.8 * latency_ms / 1000)
        # forget finished players (each holds its samples): a long benchmark plays thousands
        self._players = [p for p in self._players if p.proc.poll() is None]
        self._players.append(pb)
        return pb

    def play(self, sink: str, samples: np.ndarray, gain_db: float = 0.0, rate: int | None = None) -> Playback:
        """Play int16 mono samples into ``sink`` now; returns the running Playback."""
        return self.play_together([(sink, samples, gain_db)], rate)[0]

    def play_together(self, items: list[tuple[str, np.ndarray, float]], rate: int | None = None) -> list[Playback]:
        """Play several (sink, samples, gain_db) at once: all pacat processes connect first, then
        their data is handed over back to back (start skew: pacat and server buffering only)."""
        pbs = [self.prepare(sink, samples, gain, rate) for sink, samples, gain in items]
        time.sleep(0.3)  # let pacat connect, so that start_ns is close to the actual start
        for pb in pbs:
            pb.begin()
        return pbs

    def play_wav(self, sink: str, path: str | Path, gain_db: float = 0.0) -> Playback:
        """Play a 16-bit WAV file into ``sink`` with a gain in dB."""
        samples, rate = read_wav(path)
        return self.play(sink, samples, gain_db, rate)

    def record(self, sink: str, seconds: float) -> np.ndarray:
        """Record ``seconds`` of int16 mono samples at the sinks' rate from ``sink``'s monitor."""
        n_bytes = int(seconds * self.rate) * 2
        proc = subprocess.Popen(["parec", "--raw", "--format=s16le", f"--rate={self.rate}", "--channels=1",
                                 "--latency-msec=20", "-d", f"{sink}.monitor"],
                                env=self.child_env(sink), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = bytearray()
        deadline = time.monotonic() + seconds + 10
        try:
            while len(buf) < n_bytes and time.monotonic() < deadline:
                chunk = proc.stdout.read1(min(65536, n_bytes - len(buf)))
                if not chunk:
                    break
                buf += chunk
        finally:
            proc.kill()
            proc.wait(5)
        return np.frombuffer(bytes(buf[: len(buf) // 2 * 2]), dtype="<i2").astype(np.int16)


def refresh_portaudio() -> None:
    """Re-initialise PortAudio in this process (if sounddevice is loaded) so that a changed
    ALSA configuration or a returned device is seen. Only call with no stream open."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


def espeak(text: str, path: str | Path, *, rate: int = 16000, voice: str = "en", speed_wpm: int = 160,
           amplitude: int = 100) -> np.ndarray:
    """Synthesize ``text`` with espeak-ng (22.05 kHz) and convert it with sox to ``rate`` Hz mono;
    the WAV is left at ``path``. Returns its int16 samples."""
    raw = Path(path).with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-a", str(amplitude), "-w", str(raw), text],
                   check=True, capture_output=True, timeout=30)
    subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(path)],
                   check=True, capture_output=True, timeout=30)
    raw.unlink()
    samples, got = read_wav(path)
    if got != rate:
        raise PulseError(f"sox wrote {got} Hz, expected {rate} Hz")
    return samples


# -- the dialogue both audio capture tests play ----------------------------------------------------

AGENT_LINES = ["Good morning, you are speaking with Anna from the service desk.",
               "Could you give me your customer number, please?",
               "Thank you. I can see your order here, it left our warehouse yesterday."]
CUSTOMER_LINES = ["Hello, I am calling about my order.",
                  "Yes, it is four five seven two one.",
                  "Great, so when will it arrive?"]


def monitor_config(agent_device: str, customer_device: str):
    """The station's defaults (no system config) recording ``agent_device`` and ``customer_device``
    (PortAudio names such as ``agent_monitor``, or sound-server names such as ``agent.monitor``)."""
    from station import config
    return config.load(system=False).replace(audio={"agent_device": agent_device,
                                                   "customer_device": customer_device})


@pytest.fixture(scope="module")
def voices(tmp_path_factory):
    """{"agent": [...], "customer": [...]}: the dialogue's lines spoken by espeak-ng at 165 words a
    minute, int16 at 16 kHz (a test module imports this fixture by name)."""
    d = tmp_path_factory.mktemp("voices")
    return {who: [espeak(t, d / f"{who}{i}.wav", speed_wpm=165) for i, t in enumerate(lines)]
            for who, lines in (("agent", AGENT_LINES), ("customer", CUSTOMER_LINES))}


def start_station_run(conf_dir: Path, data: Path, log_path: Path, *, station_id: str,
                      agent_device: str, customer_device: str) -> subprocess.Popen:
    """``station run`` (the real sources, publisher off) recording the given audio devices into
    ``data``, with a config written into ``conf_dir`` and its output in ``log_path``; without a
    display, so only the audio source gives evidence. The caller stops it."""
    from tests.support import REPO, station_cmd
    conf = Path(conf_dir) / "station.toml"
    conf.write_text(f'[station]\nid = "{station_id}"\n[publisher]\nenabled = false\n[audio]\n'
                    f'agent_device = "{agent_device}"\ncustomer_device = "{customer_device}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    with open(log_path, "wb") as log:
        return subprocess.Popen(station_cmd("--no-system-config", "--config", str(conf), "run", "--data-dir", str(data)),
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def latest_journal(data: Path):
    """The newest session journal under ``data``, open (a Journal), or None before there is one
    (a journal being created is listed with a problem until its header is in)."""
    from station.recorder.journal import Journal, list_sessions
    infos = [i for i in list_sessions(data) if not i.problem]
    return Journal.open(infos[-1].path) if infos else None
