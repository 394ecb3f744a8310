"""``station devices``: the audio devices PortAudio sees, with the ids and names that
``audio.agent_device`` / ``audio.customer_device`` accept, and which ones the config selects.

Exit codes: 0 listed; 1 PortAudio cannot be loaded; 2 bad configuration.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("devices", help="list audio devices and the ids the config uses")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from station.capture.audio import AudioDeviceError, list_devices, plan_streams
    from station.cli import load_config
    from station.errors import UserError

    cfg = load_config(args)
    try:
        devices = list_devices()
    except OSError as e:
        raise UserError(f"PortAudio cannot be loaded ({e}); install libportaudio2") from None
    selected: dict[int, list[str]] = {}
    problem = ""
    try:
        for plan in plan_streams(cfg):
            for ch, col in plan.picks:
                selected.setdefault(plan.device, []).append(f"{'agent' if ch == 0 else 'customer'}:ch{col}")
    except AudioDeviceError as e:
        problem = str(e)
    for d in devices:
        d["selected"] = selected.get(d["id"], [])
    if args.json:
        print(json.dumps({"devices": devices, "config_problem": problem}, indent=2))
        return 0
    if not devices:
        print("no audio devices found")
    else:
        print(f"{'id':>3}  {'name':<32} {'host api':<10} {'in':>3} {'out':>3} {'rate':>7}  used as")
        for d in devices:
            print(f"{d['id']:>3}  {d['name'][:32]:<32} {d['hostapi'][:10]:<10} {d['max_input_channels']:>3} "
                  f"{d['max_output_channels']:>3} {d['default_samplerate']:>7.0f}  {', '.join(d['selected'])}")
    print(f"config: agent_device={cfg.audio.agent_device!r} channel {cfg.audio.agent_channel}, "
          f"customer_device={cfg.audio.customer_device!r} channel {cfg.audio.customer_channel}")
    if problem:
        print(f"config problem: {problem}")
    return 0
