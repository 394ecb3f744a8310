"""Serial calibration rig and sound level meter drivers (pyserial).

``Calibrator`` speaks the line protocol documented in ``docs/calibration.md``: ASCII commands ended by
``\\n``, one reply line per command, ``OK [value]`` or ``ERR <reason>``::

    ID?                 -> OK <maker,model,serial,firmware>
    TONE <hz> <dbspl>   -> OK        select a sine of <hz> Hz at <dbspl> dB SPL at the coupler
    SPEECH <dbspl>      -> OK        select the rig's test sentence at an active level of <dbspl>
    PLAY                -> OK        start the selected signal
    STOP                -> OK        stop
    SPL?                -> OK <dbspl> the rig's reference microphone reading (dB SPL)

``SoundLevelMeter`` reads a meter that streams one reading per line (``63.2``, ``SPL 63.2 dB``,
``LAeq=63.2dBA``...): the first number on a line is the reading in dB SPL.

Timeouts everywhere: every reply (or reading) must arrive within ``timeout`` seconds, measured with
a deadline over the whole line, so a device that sends bytes without ever ending a line cannot
hold us either. Failure modes, all ``RigError`` (a ``UserError``, exit code 1) with a message that
names the port and what went wrong: the port cannot be opened; no reply within the timeout (dead
device, wrong baud rate); a reply that is not ``OK``/``ERR`` or too long (garbage, babbling); an
``ERR`` reply; the device disconnected (EOF/EIO on the port).

URLs: anything ``serial.serial_for_url`` accepts: ``/dev/ttyUSB0``, ``/dev/pts/5``, ``loop://``,
``socket://host:port``, ``spy://...``.
"""

from __future__ import annotations

import math
import re
import time

import serial

try:
    import termios
    _PORT_ERRORS: tuple = (serial.SerialException, OSError, termios.error)
except ImportError:  # not POSIX
    _PORT_ERRORS = (serial.SerialException, OSError)

from station.errors import UserError

MAX_LINE = 256          # bytes; a longer line is babble
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class RigError(UserError):
    """The rig or meter failed: dead, babbling, disconnected, refused a command."""

    exit_code = 1


class _Line:
    """Line reader with an overall deadline on top of a pyserial port."""

    def __init__(self, port: serial.SerialBase, name: str):
        self.port = port
        self.name = name
        self.buf = bytearray()

    def readline(self, timeout: float) -> str | None:
        """One line without its terminator, or None when the deadline passes first.

        Raises RigError on disconnection or a line longer than MAX_LINE.
        """
        deadline = time.monotonic() + timeout
        while True:
            line = self._take()
            if line is not None:
                return line
            if len(self.buf) > MAX_LINE:
                raise RigError(f"{self.name}: sent {len(self.buf)} bytes without a line end "
                               "(babbling device or wrong baud rate?)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.port.timeout = min(remaining, 0.1)
                chunk = self.port.read(max(1, min(self.port.in_waiting, 4096)))
            except _PORT_ERRORS as e:
                raise RigError(f"{self.name}: disconnected ({e})") from None
            if chunk:
                self.buf += chunk

    def _take(self) -> str | None:
        """The next non-empty complete line in the buffer (CR, LF or CRLF ended), else None."""
        while True:
            ends = [i for i in (self.buf.find(b"\n"), self.buf.find(b"\r")) if i >= 0]
            if not ends:
                return None
            i = min(ends)
            text = bytes(self.buf[:i]).decode("ascii", "replace").strip()
            del self.buf[:i + 1]
            if len(text) > MAX_LINE:
                raise RigError(f"{self.name}: sent a {len(text)}-character line (babbling device?)")
            if text:
                return text

    def drain(self) -> None:
        """Drop whatever the device sent before a new command."""
        self.buf.clear()
        try:
            self.port.reset_input_buffer()
        except _PORT_ERRORS as e:
            raise RigError(f"{self.name}: disconnected ({e})") from None


def open_port(url: str, baudrate: int, timeout: float) -> serial.SerialBase:
    """Open a serial URL; RigError when it cannot be opened."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=min(timeout, 0.1),
                                     write_timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        raise RigError(f"cannot open serial port {url}: {e}") from None


class _SerialDevice:
    """close() that never raises, and use as a context manager (``self.port``: the serial port)."""

    def close(self) -> None:
        try:
            self.port.close()
        except _PORT_ERRORS:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Calibrator(_SerialDevice):
    """Driver for the documented calibrator protocol. Use as a context manager.

    timeout: seconds allowed for each reply. Every method raises RigError on failure.
    """

    def __init__(self, url: str, *, baudrate: int = 9600, timeout: float = 2.0,
                 port: serial.SerialBase | None = None):
        self.url = url
        self.timeout = float(timeout)
        self.port = port or open_port(url, baudrate, timeout)
        self.name = f"calibrator on {url}"
        self.lines = _Line(self.port, self.name)

    def command(self, cmd: str) -> str:
        """Send one command, return the text after ``OK`` (may be empty)."""
        self.lines.drain()
        try:
            self.port.write((cmd + "\n").encode("ascii"))
            self.port.flush()
        except serial.SerialTimeoutException:
            raise RigError(f"{self.name}: could not send {cmd!r} within {self.timeout:g} s") from None
        except _PORT_ERRORS as e:
            raise RigError(f"{self.name}: disconnected ({e})") from None
        line = self.lines.readline(self.timeout)
        if line is None:
            raise RigError(f"{self.name}: no reply to {cmd!r} within {self.timeout:g} s "
                           "(device off, unplugged or wrong baud rate?)")
        if line == "OK" or line.startswith("OK "):
            return line[3:].strip()
        if line == "ERR" or line.startswith("ERR "):
            raise RigError(f"{self.name}: refused {cmd!r}: {line[4:].strip() or 'no reason given'}")
        shown = line if len(line) <= 40 else line[:37] + "..."
        raise RigError(f"{self.name}: unexpected reply to {cmd!r}: {shown!r} (not OK/ERR: garbage "
                       "or not a calibrator)")

    def identify(self) -> str:
        ident = self.command("ID?")
        if not ident:
            raise RigError(f"{self.name}: empty identification")
        return ident

    def tone(self, hz: float, dbspl: float) -> None:
        self.command(f"TONE {hz:g} {dbspl:.1f}")

    def speech(self, dbspl: float) -> None:
        self.command(f"SPEECH {dbspl:.1f}")

    def play(self) -> None:
        self.command("PLAY")

    def stop(self) -> None:
        self.command("STOP")

    def spl(self) -> float:
        """The rig's reference reading in dB SPL."""
        text = self.command("SPL?")
        try:
            value = float(text.split()[0])
        except (ValueError, IndexError):
            raise RigError(f"{self.name}: SPL? answered {text!r}, not a number") from None
        if not 0.0 <= value <= 200.0:
            raise RigError(f"{self.name}: SPL? answered {value} dB SPL, outside 0..200")
        return value


class SoundLevelMeter(_SerialDevice):
    """A meter streaming one reading (dB SPL) per text line.

    timeout: seconds allowed between readings. max_garbage: consecutive lines without a number
    tolerated before the meter is declared to be sending garbage.
    """

    def __init__(self, url: str, *, baudrate: int = 9600, timeout: float = 2.0, max_garbage: int = 5,
                 port: serial.SerialBase | None = None):
        self.url = url
        self.timeout = float(timeout)
        self.max_garbage = max_garbage
        self.port = port or open_port(url, baudrate, timeout)
        self.name = f"sound level meter on {url}"
        self.lines = _Line(self.port, self.name)

    def reading(self) -> float:
        """The next reading (dB SPL)."""
        garbage = 0
        while True:
            line = self.lines.readline(self.timeout)
            if line is None:
                raise RigError(f"{self.name}: no reading within {self.timeout:g} s (meter off or not streaming?)")
            m = _NUMBER.search(line)
            if m:
                value = float(m.group())
                if 0.0 <= value <= 200.0:
                    return value
            garbage += 1
            if garbage >= self.max_garbage:
                shown = line if len(line) <= 40 else line[:37] + "..."
                raise RigError(f"{self.name}: {garbage} lines without a reading, last {shown!r} "
                               "(garbage: wrong device or baud rate?)")

    def average(self, count: int = 5) -> float:
        """Energy average of ``count`` fresh readings (dB SPL)."""
        self.lines.drain()
        values = [self.reading() for _ in range(max(1, count))]
        return 10.0 * math.log10(sum(10 ** (v / 10.0) for v in values) / len(values))
