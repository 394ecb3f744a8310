"""``station devices``: the audio devices the station can record, with the names that
``audio.agent_device`` / ``audio.customer_device`` accept, and which ones the config selects.

First the sound server's own sources (PulseAudio, or PipeWire's pulse server, as the capture
reaches it: ``$PULSE_SERVER``): microphones and the monitor of every sink, with description and
the hardware behind each (bus, vendor:product, serial) or "virtual"; its sinks; its default source
and sink. A device setting that is exactly one of these source names is recorded natively from
the sound server (see ``station.capture.audio.plan_streams``). Then PortAudio's devices (plain
ALSA), with ids, as before. An unreachable sound server or a PortAudio that cannot be loaded is
said in one line each.

Exit codes: 0 listed; 1 neither a sound server nor PortAudio; 2 bad configuration.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("devices", help="list audio devices and the names the config uses")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _hardware(s: dict) -> str:
    if s.get("virtual"):
        return "virtual: " + s.get("why_virtual", "")
    ids = ":".join(x for x in (s.get("vendor", ""), s.get("product", "")) if x)
    return " ".join(x for x in (s.get("bus", ""), ids, s.get("serial", "")) if x) or "?"


def run(args) -> int:
    from station.capture import soundserver
    from station.capture.audio import AudioDeviceError, list_devices, plan_streams, sound_server_sources
    from station.cli import load_config
    from station.errors import UserError

    cfg = load_config(args)
    try:
        server = soundserver.inventory()
        server_error = ""
    except soundserver.SoundServerError as e:
        server, server_error = None, str(e)
    try:
        devices = list_devices()
        pa_error = ""
    except OSError as e:
        devices, pa_error = [], f"PortAudio cannot be loaded ({e}); install libportaudio2"
    if server is None and pa_error:
        raise UserError(f"{server_error}; {pa_error}")
    selected: dict = {}
    problem = ""
    try:
        for plan in plan_streams(cfg, sound_server_sources() if server is not None else None):
            key = plan.name if plan.backend == "pulse" else plan.device
            for ch, col in plan.picks:
                selected.setdefault((plan.backend, key), []).append(f"{'agent' if ch == 0 else 'customer'}:ch{col}")
    except AudioDeviceError as e:
        problem = str(e)
    for d in devices:
        d["selected"] = selected.get(("portaudio", d["id"]), [])
    if server is not None:
        for s in server["sources"]:
            s["selected"] = selected.get(("pulse", s["name"]), [])
    if args.json:
        print(json.dumps({"sound_server": server, "sound_server_error": server_error, "devices": devices,
                          "portaudio_error": pa_error, "config_problem": problem}, indent=2))
        return 0
    if server is None:
        print(f"sound server: {server_error}")
    else:
        print(f"sound server: {server['server']}; default source {server['default_source']!r}, "
              f"default sink {server['default_sink']!r}")
        print(f"  {'source (audio.*_device = this name)':<48} {'description':<28} {'hardware':<34} used as")
        for s in server["sources"]:
            print(f"  {s['name']:<48} {s['description'][:28]:<28} {_hardware(s)[:34]:<34} {', '.join(s['selected'])}")
        for k in server["sinks"]:
            print(f"  sink {k['name']} ({k['description']}): monitor {k['monitor']}")
    if pa_error:
        print(f"PortAudio: {pa_error}")
    elif not devices:
        print("PortAudio: no audio devices found")
    else:
        print("PortAudio (plain ALSA) devices:")
        print(f"{'id':>3}  {'name':<32} {'host api':<10} {'in':>3} {'out':>3} {'rate':>7}  used as")
        for d in devices:
            print(f"{d['id']:>3}  {d['name'][:32]:<32} {d['hostapi'][:10]:<10} {d['max_input_channels']:>3} "
                  f"{d['max_output_channels']:>3} {d['default_samplerate']:>7.0f}  {', '.join(d['selected'])}")
    print(f"config: agent_device={cfg.audio.agent_device!r} channel {cfg.audio.agent_channel}, "
          f"customer_device={cfg.audio.customer_device!r} channel {cfg.audio.customer_channel}")
    if problem:
        print(f"config problem: {problem}")
    return 0
