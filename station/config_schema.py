"""What each configuration key may hold: type, range, allowed values.

Defaults themselves live in ``config/station.toml`` (the documented file); this module only says
what is allowed. ``station.config`` checks that the two agree, so a key cannot exist in one and
not in the other.

A section is a dict of key -> Field. A key whose value is a list of tables (``[[categories.rule]]``)
is a ``Table`` field holding the schema of one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Field:
    """One scalar or list key.

    kind: "int", "float", "bool", "str", "str_list"
    lo/hi: inclusive numeric bounds (None = unbounded)
    choices: allowed values (None = any)
    pattern: regular expression a str value must match in full (None = any)
    regex: the value itself must compile as a regular expression
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    regex: bool = False

    def describe(self) -> str:
        """Human-readable statement of what is allowed, for error messages."""
        what = {"int": "an integer", "float": "a number", "bool": "true or false",
                "str": "a string", "str_list": "a list of strings"}[self.kind]
        if self.choices is not None:
            what += " in " + ", ".join(repr(c) for c in self.choices)
        if self.lo is not None and self.hi is not None:
            what += f" from {self.lo:g} to {self.hi:g}"
        elif self.lo is not None:
            what += f" >= {self.lo:g}"
        elif self.hi is not None:
            what += f" <= {self.hi:g}"
        if self.pattern is not None:
            what += f" matching {self.pattern}"
        if self.regex:
            what += " (a valid regular expression)"
        return what


@dataclass(frozen=True)
class Table:
    """A list of tables (``[[section.key]]``), each with the given fields.

    A field named in ``defaults`` may be left out (it then takes that value); every other field is
    required. ``one_of``: at least one of these fields must differ from its default (a rule that
    sets none of them would match everything).
    """

    fields: dict[str, Field] = field(default_factory=dict)
    max_items: int = 1000
    defaults: dict[str, Any] = field(default_factory=dict)
    one_of: tuple[str, ...] = ()


CATEGORIES = ("crm", "knowledge", "script", "chat", "email", "typing_task", "other")
MS_DAY = 86_400_000
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
ENDPOINT_PATTERN = r"(tcp|ipc|inproc)://\S+"

SCHEMA: dict[str, dict[str, Field | Table]] = {
    "station": {
        "id": Field("str", pattern=ID_PATTERN),
        "data_dir": Field("str"),
        "retention_days": Field("int", 1, 3650),
        "headset": Field("str", pattern=f"({ID_PATTERN})?"),
        "headset_dir": Field("str"),
        "headset_max_age_days": Field("int", 1, 3650),
        "mode": Field("str", choices=("practice", "exam")),
        "exam_requires": Field("str_list"),
    },
    "privacy": {
        "titles": Field("str", choices=("keep", "hash", "drop")),
    },
    "audio": {
        "sample_rate": Field("int", choices=(8000, 16000, 32000, 48000)),
        "frame_ms": Field("int", choices=(10, 20, 30)),
        "vad_mode": Field("int", 0, 3),
        "agent_device": Field("str"),
        "agent_channel": Field("int", 0, 63),
        "customer_device": Field("str"),
        "customer_channel": Field("int", 0, 63),
        "noise_floor_dbfs": Field("float", -120.0, 0.0),
        "gate_margin_db": Field("float", 0.0, 60.0),
        "click_window_ms": Field("int", 0, 1000),
        "click_crest_db": Field("float", 0.0, 60.0),
        "click_energy_share": Field("float", 0.0, 1.0),
        "bleed_coupling_db": Field("float", 0.0, 120.0),
        "bleed_margin_db": Field("float", 0.0, 60.0),
        "latency_ms": Field("float", 0.0, 2000.0),
        "block_ms": Field("int", 10, 1000),
        "customer_gate_dbfs": Field("float", -127.0, 0.0),
        "bleed_window_ms": Field("int", 0, 500),
        "align_wait_ms": Field("int", 0, 5000),
        "stall_ms": Field("int", 200, 10_000),
        "retry_ms": Field("int", 100, 1000),
    },
    "input": {
        "backend": Field("str", choices=("auto", "evdev", "xi2", "pynput")),
        "allow": Table({
            "name": Field("str"),
            "bus": Field("str"),
            "vendor": Field("str", pattern=r"([0-9A-Fa-f]{4})?"),
            "product": Field("str", pattern=r"([0-9A-Fa-f]{4})?"),
            "phys": Field("str"),
            "virtual": Field("bool"),
        }, max_items=64, defaults={"name": "", "bus": "", "vendor": "", "product": "", "phys": "", "virtual": None},
            one_of=("name", "bus", "vendor", "product", "phys", "virtual")),
    },
    "speech": {
        "padding_ms": Field("int", 0, 5000),
        "min_spurt_ms": Field("int", 0, 5000),
    },
    "activity": {
        "typing_burst_gap_ms": Field("int", 1, 600_000),
        "mouse_active_gap_ms": Field("int", 1, 600_000),
        "dead_air_ms": Field("int", 100, 600_000),
        "overtalk_min_ms": Field("int", 0, 600_000),
        "after_contact_idle_ms": Field("int", 1000, 3_600_000),
        "info_categories": Field("str_list", choices=CATEGORIES),
    },
    "contacts": {
        "phone_gap_ms": Field("int", 1000, 3_600_000),
        "phone_min_customer_ms": Field("int", 0, 3_600_000),
        "chat_gap_ms": Field("int", 1000, 3_600_000),
    },
    "rules": {
        "s1_min_share": Field("float", 0.0, 1.0),
        "s2_min_switches_per_min": Field("float", 0.0, 600.0),
        "s2_min_info_share": Field("float", 0.0, 1.0),
        "s2_info_window_ms": Field("int", 0, 3_600_000),
        "s3_min_share": Field("float", 0.0, 1.0),
        "s4_min_rate_diff": Field("float", 0.0, 10.0),
        "d5_min_accuracy": Field("float", 0.0, 1.0),
        "c3_max_counter": Field("int", 0, 1000),
        "c5_max_median_spurt_ms": Field("int", 0, 600_000),
        "c5_long_spurt_ms": Field("int", 0, 600_000),
        "c6_max_dead_air": Field("int", 0, 100_000),
    },
    "typing": {
        "reference_file": Field("str"),
    },
    "engine": {
        "summary_interval_ms": Field("int", 100, 60_000),
    },
    "journal": {
        "commit_interval_ms": Field("int", 50, 1000),
        "ingest_interval_ms": Field("int", 10, 1000),
    },
    "handover": {
        "socket": Field("str"),
        "heartbeat_ms": Field("int", 50, 1900),
        "batch_ms": Field("int", 10, 1000),
        "gap_alert_ms": Field("int", 200, 60_000),
        "max_frame_bytes": Field("int", 1024, 256 * 1024 * 1024),
        "queue_max_batches": Field("int", 1, 1_000_000),
        "capture_user": Field("str", pattern=r"([a-z_][a-z0-9_-]{0,31}|[0-9]{1,10})?"),
        "capture_exe": Field("str_list"),
        "max_future_ms": Field("int", 10, 10_000),
        "max_decoded_ratio": Field("int", 2, 10_000),
        "max_decoded_bytes": Field("int", 64 * 1024, 256 * 1024 * 1024),
        "max_batch_rows": Field("int", 100, 10_000_000),
    },
    "calibration": {
        "output_device": Field("str"),
        "noise_seconds": Field("float", 0.5, 60.0),
        "speech_seconds": Field("float", 1.0, 60.0),
        "tone_seconds": Field("float", 0.2, 10.0),
        "test_level_dbfs": Field("float", -60.0, -3.0),
        "max_noise_floor_dbfs": Field("float", -140.0, 0.0),
        "min_snr_db": Field("float", 0.0, 100.0),
        "clip_dbfs": Field("float", -6.0, 0.0),
        "min_coupling_db": Field("float", 0.0, 120.0),
        "max_round_trip_ms": Field("float", 1.0, 4000.0),
        "max_vad_false_alarm": Field("float", 0.0, 1.0),
        "min_speech_detection": Field("float", 0.0, 1.0),
        "min_click_rejection": Field("float", 0.0, 1.0),
        "tone_hz": Field("float", 100.0, 8000.0),
        "tone_dbspl": Field("float", 40.0, 130.0),
        "speech_dbspl": Field("float", 40.0, 130.0),
        "rig_baudrate": Field("int", 300, 4_000_000),
        "rig_timeout_s": Field("float", 0.05, 60.0),
        "certificate_dir": Field("str"),
    },
    "publisher": {
        "enabled": Field("bool"),
        "pub_bind": Field("str", pattern=ENDPOINT_PATTERN),
        "req_bind": Field("str", pattern=ENDPOINT_PATTERN),
        "secret_key_file": Field("str"),
        "authorized_keys_dir": Field("str"),
        "allow_plaintext_loopback": Field("bool"),
        "max_request_bytes": Field("int", 1024, 16 * 1024 * 1024),
        "send_hwm": Field("int", 100, 10_000_000),
        "replay_chunk_bytes": Field("int", 16 * 1024, 64 * 1024 * 1024),
        "replay_chunk_messages": Field("int", 10, 1_000_000),
        "recent_messages": Field("int", 0, 1_000_000),
        "queue_max": Field("int", 100, 10_000_000),
    },
    "console": {
        "assessor_id": Field("str", pattern=ID_PATTERN),
        "assessor_name": Field("str"),
        "secret_key_file": Field("str"),
        "store": Field("str"),
        "allow_plaintext_loopback": Field("bool"),
        "stale_ms": Field("int", 200, 600_000),
        "request_timeout_ms": Field("int", 100, 600_000),
        "resync_ms": Field("int", 500, 3_600_000),
        "clock_probes": Field("int", 1, 64),
        "clock_probe_interval_s": Field("int", 5, 86_400),
        "max_message_bytes": Field("int", 64 * 1024, 256 * 1024 * 1024),
        "proxy_endpoint": Field("str", pattern=f"({ENDPOINT_PATTERN})?"),
        "proxy_public_key": Field("str"),
        "http_host": Field("str"),
        "http_port": Field("int", 1, 65535),
        "silent_ms": Field("int", 200, 600_000),
        "clock_warn_ms": Field("int", 1, 86_400_000),
        "tls_cert_file": Field("str"),
        "tls_key_file": Field("str"),
        "assessor": Table({
            "id": Field("str", pattern=ID_PATTERN),
            "name": Field("str"),
            "secret_key_file": Field("str"),
            "password_hash": Field("str", pattern=r"scrypt\$\S+"),
        }, max_items=16),
        "station": Table({
            "id": Field("str", pattern=ID_PATTERN),
            "pub_endpoint": Field("str", pattern=ENDPOINT_PATTERN),
            "req_endpoint": Field("str", pattern=ENDPOINT_PATTERN),
            "public_key": Field("str"),
        }),
    },
    "proxy": {
        "frontend_bind": Field("str", pattern=ENDPOINT_PATTERN),
        "secret_key_file": Field("str"),
        "authorized_keys_dir": Field("str"),
        "allow_plaintext_loopback": Field("bool"),
    },
    "categories": {
        "rule": Table({
            "category": Field("str", choices=CATEGORIES),
            "class": Field("str", regex=True),
            "title": Field("str", regex=True),
            "process": Field("str", regex=True),
        }, defaults={"class": "", "title": "", "process": ""}, one_of=("class", "title", "process")),
    },
}
