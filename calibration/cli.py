"""Command line of the calibration: ``station calibrate ...`` and ``python -m calibration ...``.

    station calibrate run --headset ID --technician NAME [--rig URL] [--meter URL] [--yes]
    station calibrate level FILE.wav [--channel N] [--json]

Exit codes: 0 calibration passed / level measured; 1 calibration failed its limits (profile written
with passed = false) or aborted (no profile written; the message says why); 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np

from station.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="calibrate_command", metavar="STEP")
    run = sub.add_parser("run", help="calibrate the configured headset (guided; --yes with a rig)")
    run.add_argument("--headset", required=True, help="headset id (profile config/headsets/<id>.toml)")
    run.add_argument("--technician", required=True, help="name or id of the technician")
    run.add_argument("--rig", metavar="URL", help="serial calibrator (e.g. /dev/ttyUSB0, loop://)")
    run.add_argument("--meter", metavar="URL", help="serial sound level meter streaming readings")
    run.add_argument("--yes", action="store_true", help="non-interactive: the rig drives every step")
    run.set_defaults(func=cmd_run)
    lev = sub.add_parser("level", help="P.56 active speech level, activity, peak and noise floor of a WAV")
    lev.add_argument("file", type=Path)
    lev.add_argument("--channel", type=int, default=0, help="channel of a multi-channel file (default 0)")
    lev.add_argument("--json", action="store_true", help="print JSON")
    lev.set_defaults(func=cmd_level)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _config(args):
    from station.cli import load_config
    return load_config(args)


def cmd_run(args) -> int:
    from station.config import ConfigError

    from . import procedure
    from .audio import SoundDeviceIO
    from .rig import Calibrator, SoundLevelMeter

    cfg = _config(args)
    import re

    from station.config_schema import ID_PATTERN
    if not re.fullmatch(ID_PATTERN, args.headset):
        raise ConfigError(f"--headset {args.headset!r}; allowed: letters, digits, '.', '_', '-' (max 64)")
    if args.yes and not args.rig:
        raise UserError("--yes needs a calibration rig (--rig URL): without one a technician must speak", 2)
    c = cfg.calibration
    rig = meter = None
    try:
        if args.rig:
            rig = Calibrator(args.rig, baudrate=c.rig_baudrate, timeout=c.rig_timeout_s)
        if args.meter:
            meter = SoundLevelMeter(args.meter, baudrate=c.rig_baudrate, timeout=c.rig_timeout_s)
        io = SoundDeviceIO(cfg)
        result = procedure.run(cfg, io, procedure.Options(headset_id=args.headset, technician=args.technician,
                                                         rig=rig, meter=meter, yes=args.yes))
    finally:
        for dev in (rig, meter):
            if dev is not None:
                dev.close()
    print("PASS" if result.passed else "FAIL")
    return 0 if result.passed else 1


def read_wav(path: Path, channel: int = 0) -> tuple[np.ndarray, int]:
    """int16 samples of one channel and the rate of a PCM WAV file; UserError when unusable."""
    try:
        with wave.open(str(path), "rb") as w:
            width, chans, rate, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            data = w.readframes(n)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (wave.Error, EOFError) as e:
        raise UserError(f"{path}: not a PCM WAV file ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    if width != 2:
        raise UserError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is supported (convert with "
                        "`sox in.wav -b 16 out.wav`)")
    if not 0 <= channel < chans:
        raise UserError(f"{path}: has {chans} channel(s); channel {channel} does not exist")
    x = np.frombuffer(data[: len(data) // (2 * chans) * 2 * chans], dtype="<i2").reshape(-1, chans)[:, channel]
    if len(x) == 0:
        raise UserError(f"{path}: contains no samples")
    return x.astype(np.int16), rate


def level_report(x: np.ndarray, rate: int) -> dict:
    """Figures for ``calibrate level``: P.56 level and activity, peak, long-term level, noise floor
    (10th percentile of 20 ms frame levels: the quiet parts between words)."""
    from . import measure, p56
    r = p56.measure(x, rate)
    fl = max(1, rate // 50)
    lv = measure.frame_levels(x, fl)
    floor = float(np.percentile(lv, 10)) if len(lv) else measure.level_dbfs(x)
    clip = measure.clipping(x)
    return {"duration_s": round(len(x) / rate, 3), "sample_rate_hz": rate,
            "active_level_dbfs": round(r.active_dbov, 2), "activity_factor": round(r.activity, 4),
            "long_term_level_dbfs": round(r.long_term_dbov, 2), "peak_dbfs": round(clip.peak_dbfs, 2),
            "clipped_samples": clip.clipped, "noise_floor_dbfs": round(floor, 2),
            "snr_db": round(r.active_dbov - floor, 2) if not r.silent else None, "speech_found": not r.silent}


def cmd_level(args) -> int:
    x, rate = read_wav(args.file, args.channel)
    rep = level_report(x, rate)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        if not rep["speech_found"]:
            print(f"{args.file}: no active speech (P.56 finds nothing above its lowest threshold)")
        else:
            print(f"active speech level  {rep['active_level_dbfs']:7.2f} dBFS (ITU-T P.56 method B)")
            print(f"activity factor      {rep['activity_factor'] * 100:7.1f} %")
        print(f"long-term level      {rep['long_term_level_dbfs']:7.2f} dBFS")
        print(f"peak                 {rep['peak_dbfs']:7.2f} dBFS" + (
            f"  ({rep['clipped_samples']} samples clipped)" if rep["clipped_samples"] else ""))
        print(f"noise floor          {rep['noise_floor_dbfs']:7.2f} dBFS (10th percentile of 20 ms frames)")
        if rep["snr_db"] is not None:
            print(f"SNR                  {rep['snr_db']:7.2f} dB")
        print(f"duration             {rep['duration_s']:7.2f} s at {rate} Hz")
    return 0 if rep["speech_found"] else 1
