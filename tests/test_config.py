"""Configuration: precedence of defaults, system file and --config; schema and defaults agree."""

import pytest

from station import config
from station.config import ConfigError
from station.config_schema import SCHEMA, Table


def test_defaults_cover_the_schema_and_standard_thresholds():
    cfg = config.load(system=False)
    for section, keys in SCHEMA.items():
        for key in keys:
            getattr(getattr(cfg, section), key)
    a = cfg.activity
    assert (a.typing_burst_gap_ms, a.mouse_active_gap_ms, a.dead_air_ms, a.overtalk_min_ms,
            a.after_contact_idle_ms) == (2000, 1000, 3000, 500, 120000)
    assert cfg.speech.padding_ms == 300
    r = cfg.rules
    assert (r.s1_min_share, r.s3_min_share, r.d5_min_accuracy, r.c3_max_counter) == (0.30, 0.25, 0.97, 3)


def test_precedence_system_then_command_line(tmp_path, monkeypatch):
    system = tmp_path / "system.toml"
    system.write_text('[station]\nid = "from-system"\nretention_days = 30\n')
    extra = tmp_path / "extra.toml"
    extra.write_text('[station]\nid = "from-cli"\n')
    monkeypatch.setenv("STATION_SYSTEM_CONFIG", str(system))
    cfg = config.load([extra])
    assert cfg.station.id == "from-cli"
    assert cfg.station.retention_days == 30
    assert cfg.sources[-2:] == [str(system), str(extra)]
    assert config.load([extra], system=False).station.retention_days == 90


def test_table_lists_are_replaced_whole_and_hash_changes(tmp_path):
    p = tmp_path / "rules.toml"
    p.write_text('[[categories.rule]]\ncategory = "crm"\nclass = "^acme$"\ntitle = ""\nprocess = ""\n')
    base = config.load(system=False)
    cfg = config.load([p], system=False)
    assert len(cfg.categories.rule) == 1
    assert cfg.hash != base.hash
    assert config.load([p], system=False).hash == cfg.hash


def test_values_are_read_only():
    cfg = config.load(system=False)
    with pytest.raises(AttributeError):
        cfg.station.id = "x"


@pytest.mark.parametrize("text", ['[audio]\nvad_mode = 4\n', '[audio]\nvad_mode = true\n',
                                  '[privacy]\ntitles = "sometimes"\n', '[station]\nid = "../etc"\n',
                                  '[activity]\ninfo_categories = ["crm", "facebook"]\n',
                                  'station = 3\n'])
def test_invalid_values_raise_config_error_naming_the_key(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load([p], system=False)
    assert str(p) in str(e.value) and "allowed" in str(e.value) or "must be a table" in str(e.value)


def test_schema_tables_are_declared():
    assert isinstance(SCHEMA["categories"]["rule"], Table)
