"""Command line of the calibration: ``station calibrate ...`` and ``python -m calibration ...``.

    station calibrate run --headset ID --technician NAME [--rig URL] [--meter URL] [--yes]
    station calibrate level FILE.wav|FILE.flac [--channel N] [--json]

Exit codes: 0 calibration passed / level measured; 1 calibration failed its limits (profile written
with passed = false) or aborted (no profile written; the message says why); 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from station.argtypes import number
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
    lev = sub.add_parser("level", help="P.56 active speech level, activity, peak and noise floor of a "
                                       "WAV or FLAC recording (any bit depth, rate and channel count)")
    lev.add_argument("file", type=Path)
    lev.add_argument("--channel", type=number(0, 255, integer=True, what="channel number"), default=0,
                     help="channel of a multi-channel file, counted from 0 (0 = left, 1 = right; default 0)")
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


def level_report(x: np.ndarray, rate: int, clip_dbfs: float = -0.1) -> dict:
    """Figures for ``calibrate level`` of mono samples (int16 PCM or float -1..1) at ``rate`` Hz:
    P.56 level and activity (dBFS = dBov), peak and samples at or above ``clip_dbfs``, long-term
    level, noise floor (10th percentile of 20 ms frame levels: the quiet parts between words)."""
    from . import audiofile, p56
    u = p56.to_unit(x)
    r = p56.measure(u, rate)
    lv = audiofile.frame_levels_dbfs(u, max(1, rate // 50))
    floor = float(np.percentile(lv, 10)) if len(lv) else audiofile.level_dbfs(u)
    peak = float(np.max(np.abs(u)))
    clipped = int(np.count_nonzero(np.abs(u) >= 10 ** (clip_dbfs / 20.0)))
    return {"duration_s": round(len(u) / rate, 3), "sample_rate_hz": rate,
            "active_level_dbfs": round(r.active_dbov, 2), "activity_factor": round(r.activity, 4),
            "long_term_level_dbfs": round(r.long_term_dbov, 2),
            "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else p56.SILENT,
            "clipped_samples": clipped, "noise_floor_dbfs": round(floor, 2),
            "snr_db": round(r.active_dbov - floor, 2) if not r.silent else None, "speech_found": not r.silent}


def cmd_level(args) -> int:
    from . import audiofile
    rec = audiofile.read(args.file, args.channel)
    rate = rec.rate
    rep = level_report(rec.samples, rate)
    rep.update(file_format=rec.format, file_sample_rate_hz=rec.file_rate, channels=rec.channels,
               channel=rec.channel)
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
        print(f"duration             {rep['duration_s']:7.2f} s at {rate} Hz"
              + (f" (resampled from {rec.file_rate} Hz)" if rec.resampled else ""))
        print(f"file                 {rec.format}, {rec.channels} channel(s), measured channel {rec.channel} (from 0)")
    return 0 if rep["speech_found"] else 1
