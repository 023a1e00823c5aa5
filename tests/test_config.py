from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recsys.config import Config, load_config
from recsys.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_repository_config_yaml_loads_and_holds_every_default() -> None:
    """config.yaml documents every tunable: it must load, and list the same values as the built-in defaults."""
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = load_config(REPO / "config.yaml", env={})
    assert cfg == Config()

    def keys(d: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k not in ("presets", "event_types"):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(raw) == keys(Config().model_dump(mode="json"))


def test_env_overrides_individual_keys(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        env={
            "RECSYS_DATABASE_URL": "postgresql://u@h/db",
            "RECSYS_DATA_DIR": str(tmp_path),
            "RECSYS_INGEST_CHUNK_SIZE": "123",
            "RECSYS_CF_HALF_LIFE_DAYS": "30.5",
            "RECSYS_SERVICE_API_KEYS": "[k1, k2]",
            "RECSYS_SERVICE_READ_REQUIRES_KEY": "true",
            "PATH": "/usr/bin",
        },
    )
    assert cfg.database_url == "postgresql://u@h/db"
    assert cfg.data_dir == tmp_path
    assert cfg.ingest.chunk_size == 123
    assert cfg.cf.half_life_days == 30.5
    assert cfg.service.api_keys == ("k1", "k2")
    assert cfg.service.read_requires_key is True


def test_default_database_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    cfg = load_config(None, env={"RECSYS_DATA_DIR": str(tmp_path / "d")})
    assert cfg.database_url == f"sqlite:///{tmp_path / 'd' / 'recsys.sqlite'}"
    assert cfg.artifacts_path == tmp_path / "d" / "artifacts"


def test_config_is_frozen() -> None:
    cfg = Config()
    with pytest.raises(Exception, match="frozen"):
        cfg.data_dir = Path("x")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("databse:\n  url: sqlite://\n", "unknown key 'databse'"),
        ("database:\n  uri: x\n", "unknown key 'database.uri'"),
        ("ingest:\n  chunk_size: many\n", "ingest.chunk_size"),
        ("ingest:\n  chunk_size: -1\n", "ingest.chunk_size"),
        ("cf:\n  model: svd\n", "cf.model"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("a: [1,\n", "not valid YAML"),
    ],
)
def test_bad_config_file_fails_naming_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, env={})


def test_unknown_env_override_is_an_error() -> None:
    with pytest.raises(ConfigError, match="RECSYS_DATABSE_URL"):
        load_config(None, env={"RECSYS_DATABSE_URL": "x"})


def test_env_override_with_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match="ingest.chunk_size"):
        load_config(None, env={"RECSYS_INGEST_CHUNK_SIZE": "lots"})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", env={})


def test_recsys_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ingest:\n  chunk_size: 7\n")
    assert load_config(None, env={"RECSYS_CONFIG": str(path)}).ingest.chunk_size == 7
