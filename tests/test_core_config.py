"""Config precedence (defaults < file < env < arguments) and clear errors."""

from __future__ import annotations

import pytest

from commy.config import Config, find_config_file, load_config
from commy.errors import ConfigError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for name in list(__import__("os").environ):
        if name.startswith("COMMY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_defaults():
    cfg = load_config(environ={})
    assert cfg == Config()
    assert cfg.data_dir == "~/.cache/commy_virtual_files"
    assert cfg.client.locality == "auto"
    assert cfg.source is None


def test_precedence_file_env_args(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('data_dir = "/from/file"\n[kernel]\nname = "python"\nvariant = "bytes"\n[client]\nlocality = "local"\n')
    cfg = load_config(f, environ={})
    assert (cfg.data_dir, cfg.kernel.name, cfg.client.locality) == ("/from/file", "python", "local")
    env = {"COMMY_KERNEL": "cffi", "COMMY_CLIENT_LOCALITY": "remote"}
    cfg = load_config(f, environ=env)
    assert (cfg.data_dir, cfg.kernel.name, cfg.kernel.variant, cfg.client.locality) == (
        "/from/file", "cffi", "bytes", "remote")
    cfg = load_config(f, environ=env, overrides={"kernel.name": "numba", "data_dir": "/args"})
    assert (cfg.data_dir, cfg.kernel.name, cfg.client.locality) == ("/args", "numba", "remote")


def test_search_order(tmp_path, monkeypatch):
    home_cfg = tmp_path / "home" / ".config" / "commy" / "commy.toml"
    home_cfg.parent.mkdir(parents=True)
    home_cfg.write_text('data_dir = "/home-file"\n')
    assert find_config_file() == home_cfg
    (tmp_path / "commy.toml").write_text('data_dir = "/cwd-file"\n')
    assert load_config(environ={}).data_dir == "/cwd-file"
    env_cfg = tmp_path / "env.toml"
    env_cfg.write_text('data_dir = "/env-file"\n')
    monkeypatch.setenv("COMMY_CONFIG", str(env_cfg))
    assert load_config().data_dir == "/env-file"
    arg_cfg = tmp_path / "arg.toml"
    arg_cfg.write_text('data_dir = "/arg-file"\n')
    assert load_config(arg_cfg).data_dir == "/arg-file"
    assert load_config(arg_cfg).source == str(arg_cfg)


def test_missing_explicit_file_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not found.*--config"):
        load_config(tmp_path / "nope.toml", environ={})
    monkeypatch.setenv("COMMY_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="COMMY_CONFIG"):
        load_config()


@pytest.mark.parametrize(
    "text, match",
    [
        ("bogus = 1\n", r"unknown config key 'bogus' \(from .*c.toml\)"),
        ("[kernel]\nnmae = 'x'\n", r"unknown config key 'kernel.nmae' \(from .*c.toml\)"),
        ("[client]\nlocality = 'sideways'\n", r"client.locality.*c.toml.*auto, local, remote"),
        ("[server]\nport = 'high'\n", r"'server.port' \(from .*c.toml\) must be an integer"),
        ("[server]\ntls = 'yes'\n", r"'server.tls' \(from .*c.toml\) must be true or false"),
        ("[plugins]\ndisable = 'x'\n", r"'plugins.disable' .* must be a list of strings"),
        ("kernel = 3\n", r"section 'kernel' .* must be a table"),
        ("[kernel\n", r"cannot read config file"),
    ],
)
def test_bad_file_values_name_key_and_source(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f, environ={})


def test_bad_env_values_name_the_variable():
    with pytest.raises(ConfigError, match="environment COMMY_SERVER_PORT"):
        load_config(environ={"COMMY_SERVER_PORT": "eighty"})
    with pytest.raises(ConfigError, match="unknown environment variable COMMY_KERNAL"):
        load_config(environ={"COMMY_KERNAL": "cffi"})
    cfg = load_config(environ={"COMMY_SERVER_PORT": "9000", "COMMY_SERVER_TLS": "off",
                               "COMMY_DISABLE_PLUGINS": "a, b,,"})
    assert (cfg.server.port, cfg.server.tls, cfg.plugins.disable) == (9000, False, ["a", "b"])


def test_bad_argument_key():
    with pytest.raises(ConfigError, match="'nope.x' \\(from arguments\\)"):
        load_config(environ={}, overrides={"nope.x": 1})


def test_every_config_key_is_documented():
    import re
    from pathlib import Path

    import attrs

    from commy.config import SECTIONS

    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    block = doc[doc.index("```toml"):]
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in block, f"docs/configuration.md lacks [{section}]"
        part = block[block.index(f"[{section}]"):]
        part = part[: (m.start() if (m := re.search(r"^\[(?!" + section + r"\])", part[1:], re.M)) else len(part)) + 1]
        for field in attrs.fields(cls):
            assert re.search(rf"^{field.name} = ", part, re.M), f"{section}.{field.name} is not documented"
