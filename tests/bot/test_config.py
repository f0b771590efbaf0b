"""Configuration: defaults, the example file, and one-line errors that name the key."""

import tomllib
from pathlib import Path

import pytest

from bot.config import Config, load_config, override, parse_config
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_gives_the_embedded_defaults(monkeypatch):
    monkeypatch.delenv("DIALOBOT_CONFIG", raising=False)
    config = load_config(None)
    assert config == Config()
    assert config.model.quantization == "int8"
    assert config.console.enabled and not config.discord.enabled and not config.slack.enabled


def test_the_example_file_documents_every_key_with_its_default():
    text = (ROOT / "config.example.toml").read_text()
    example = tomllib.loads(text)
    assert parse_config(example) == Config()
    for section, values in Config().model_dump().items():
        for key, default in values.items():
            # TOML has no null: keys whose default is "unset" are shown commented out.
            shown = key in example[section] if default is not None else f"\n# {key} = " in text
            assert shown, f"config.example.toml does not document {section}.{key}"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"generation": {"top_p": 3}}, "generation.top_p: Input should be less than or equal to 1"),
        ({"model": {"quantization": "int4"}}, "model.quantization: Input should be 'int8' or 'none'"),
        ({"history": {"max_turn": 5}}, "history.max_turn: unknown key"),
        ({"modle": {}}, "modle: unknown key"),
        (
            {"generation": {"max_new_tokens": "many"}},
            "generation.max_new_tokens: Input should be a valid integer",
        ),
    ],
)
def test_bad_values_name_the_key(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_bad_toml_and_missing_file_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_overrides_are_validated():
    assert override(Config(), "model", name="demo", quantization=None).model.name == "demo"
    with pytest.raises(ConfigError, match=r"model\.quantization"):
        override(Config(), "model", quantization="fp8")


def test_storage_url_from_environment(monkeypatch):
    config = parse_config({"storage": {"url_env": "TEST_DB_URL"}})
    monkeypatch.delenv("TEST_DB_URL", raising=False)
    with pytest.raises(ConfigError, match=r"storage\.url_env: environment variable TEST_DB_URL is not set"):
        config.storage.resolve_url()
    monkeypatch.setenv("TEST_DB_URL", "sqlite+aiosqlite:///x.db")
    assert config.storage.resolve_url() == "sqlite+aiosqlite:///x.db"


def test_default_database_lives_in_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DIALOBOT_DATA_DIR", str(tmp_path))
    assert Config().storage.resolve_url() == f"sqlite+aiosqlite:///{tmp_path / 'dialobot.db'}"


def test_remote_retries_must_fit_the_reply_timeout():
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": {"backend": "openai"}, "openai": {"timeout_seconds": 60}}, source="bot.toml")
    assert str(caught.value) == (
        "bot.toml: openai: 3 attempts of up to 60 s (openai.max_retries + 1 x openai.timeout_seconds, plus "
        "backoff) can take 181.5 s, more than generation.timeout_seconds (120); lower them or raise "
        "generation.timeout_seconds"
    )
    # The defaults fit; other backends never make the request; no reply timeout means no limit.
    assert parse_config({"model": {"backend": "openai"}}).openai.max_retries == 2
    assert parse_config({"openai": {"timeout_seconds": 60}})
    assert parse_config(
        {
            "model": {"backend": "openai"},
            "openai": {"timeout_seconds": 60},
            "generation": {"timeout_seconds": 0},
        }
    )
