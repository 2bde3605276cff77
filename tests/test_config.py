import pytest

from raytasks.core import config
from raytasks.core.storage import run_dev


def test_precedence_file_env_flags(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('dev = "filedev"\nport = 9000\nwandb_project = "p"\n')
    monkeypatch.setenv("RAYTASKS_CONFIG", str(path))
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    monkeypatch.delenv("RAYTASKS_PORT", raising=False)
    assert config.load()["dev"] == "filedev"
    monkeypatch.setenv("RAYTASKS_DEV", "envdev")
    monkeypatch.setenv("RAYTASKS_PORT", "9100")
    cfg = config.load()
    assert (cfg["dev"], cfg["port"], cfg["wandb_project"]) == ("envdev", 9100, "p")
    assert config.load(dev="flagdev")["dev"] == "flagdev"


def test_placeholder_dev_and_bad_values_refused(tmp_path, monkeypatch):
    (tmp_path / "missing.toml").write_text("")  # no settings file: defaults
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.delenv("RAYTASKS_DEV", raising=False)
    with pytest.raises(config.ConfigError, match="set your dev tag"):
        run_dev(config.load())
    assert run_dev(config.load(dev="alice")) == "alice"
    with pytest.raises(config.ConfigError, match="letters"):
        run_dev(config.load(dev="a/b"))
    monkeypatch.setenv("RAYTASKS_PORT", "eighty")
    with pytest.raises(config.ConfigError, match="port"):
        config.load()
    (tmp_path / "bad.toml").write_text("colour = 1\n")
    monkeypatch.setenv("RAYTASKS_CONFIG", str(tmp_path / "bad.toml"))
    monkeypatch.delenv("RAYTASKS_PORT")
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.load()
