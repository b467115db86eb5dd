import json

import pytest

from appliance import config
from appliance.config import Config, ConfigError


def test_defaults_are_valid():
    cfg = Config()
    assert cfg.broker.mode == "embedded"
    assert cfg.languages.source == "auto"
    assert cfg.panel.host == "127.0.0.1"


def test_missing_file_gives_defaults(tmp_path):
    assert config.load(tmp_path / "nope.json") == Config()


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"broker": {"mode": "cloud"}}, "broker.mode", "'embedded' or 'external'"),
        ({"broker": {"port": 70000}}, "broker.port", "less than or equal to 65535"),
        ({"languages": {"targets": ["english"]}}, "languages.targets", "not a language code"),
        ({"languages": {"source": "xx-yy"}}, "languages.source", "'auto' or a language code"),
        ({"room": {"id": "has space"}}, "room.id", "pattern"),
        ({"rooom": {}}, "rooom", "unknown key"),
        ({"vad": {"threshold": 2}}, "vad.threshold", "less than 1"),
    ],
)
def test_validation_names_key_and_allowed_values(data, key, words):
    with pytest.raises(ConfigError) as err:
        config.validate(data)
    assert key in str(err.value)
    assert words in str(err.value)


def test_corrupt_file_names_position(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"room": {"id": "a",}')
    with pytest.raises(ConfigError, match=r"not valid JSON at line 1"):
        config.load(path)


def test_save_atomic_round_trip_and_backup(tmp_path):
    path = tmp_path / "etc" / "config.json"
    first = Config()
    config.save_atomic(first, path)
    second = config.validate({"room": {"id": "hall-2"}, "languages": {"targets": ["pt", "es", "pt"]}})
    config.save_atomic(second, path)
    assert config.load(path).room.id == "hall-2"
    assert config.load(path).languages.targets == ["pt", "es"]
    assert json.loads((tmp_path / "etc" / "config.json.bak").read_text())["room"]["id"] == "room1"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json", "config.json.bak"]


def test_cli_validate_reports_bad_key(tmp_path, appliance_cmd):
    import subprocess

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"broker": {"mode": "cloud"}}))
    proc = subprocess.run(appliance_cmd + ["config", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "broker.mode" in proc.stderr and "Traceback" not in proc.stderr


def test_configuration_reference_doc_is_current(appliance_cmd):
    import subprocess
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    table = subprocess.run(appliance_cmd + ["config", "reference"], capture_output=True, text=True, check=True).stdout
    assert table in doc, "docs/configuration.md is stale: regenerate it with `appliance config reference`"
