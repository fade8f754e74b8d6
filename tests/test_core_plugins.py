"""Plugin discovery: built-ins, installed entry points, disable list, duplicate names."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from commy import hookimpl
from commy.errors import PluginError
from commy.plugins import BUILTIN_PLUGINS, load_plugins


def _plugin_module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


def test_builtins_register_like_plugins():
    plugins = load_plugins(entry_points=False)
    names = {info.name for info in plugins.info()}
    assert set(BUILTIN_PLUGINS) <= names
    assert plugins.kernels.registration("python").plugin == "builtin_kernels"
    assert plugins.accessors.registration("local").plugin == "builtin_accessors"
    assert plugins.transports.registration("inprocess").plugin == "builtin_transports"


def test_installed_entry_point_plugin_is_discovered():
    plugins = load_plugins()
    info = {i.name: i for i in plugins.info()}
    assert "example" in info, "the test plugin distribution is installed by `make install`"
    assert info["example"].distribution == "commy-example-plugin"
    assert info["example"].builtin is False
    assert info["example"].registered == {"kernels": ["example"]}
    provider = plugins.kernels.get("example")()
    assert provider.create().diff(b"abc", b"abd") == [(2, 3)]


def test_disable_list_blocks_before_import():
    code = (
        "import sys, json; from commy.plugins import load_plugins; "
        "p = load_plugins(['example']); "
        "print(json.dumps({'names': [i.name for i in p.info()], 'blocked': p.blocked, "
        "'imported': 'commy_example_plugin' in sys.modules, 'kernels': p.kernels.names()}))"
    )
    out = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert "example" not in out["names"]
    assert out["blocked"] == ["example"]
    assert out["imported"] is False
    assert "example" not in out["kernels"]


def test_disable_list_from_environment_and_cli(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COMMY_DISABLE_PLUGINS": "example,kernel_numba"}
    out = subprocess.run(
        [sys.executable, "-m", "commy.cli", "plugins", "--json"],
        env=env, capture_output=True, text=True, cwd=tmp_path, check=True,
    )
    data = json.loads(out.stdout)
    names = {p["name"] for p in data["plugins"]}
    assert "example" not in names and "kernel_numba" not in names
    assert data["blocked"] == ["example", "kernel_numba"]


def test_disable_list_from_config_file(tmp_path):
    cfg = tmp_path / "commy.toml"
    cfg.write_text('[plugins]\ndisable = ["example"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "commy.cli", "--config", str(cfg), "plugins", "--json"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout)["blocked"] == ["example"]


def test_duplicate_name_is_an_error_naming_both_plugins():
    dup = _plugin_module("dup", commy_register_kernels=lambda register: register("example", object))
    with pytest.raises(PluginError) as err:
        load_plugins(extra=[("my_dup_plugin", dup)])
    msg = str(err.value)
    assert "'example'" in msg and "'my_dup_plugin'" in msg and "'example'" in msg
    assert "registered twice" in msg


def test_duplicate_builtin_name_names_builtin():
    dup = _plugin_module("dup", commy_register_accessors=lambda register: register("local", object))
    with pytest.raises(PluginError, match="builtin_accessors.*other_plugin"):
        load_plugins(entry_points=False, extra=[("other_plugin", dup)])


def test_disabled_builtin_can_be_replaced():
    mine = _plugin_module("mine", commy_register_accessors=lambda register: register("local", dict))
    plugins = load_plugins(["builtin_accessors"], entry_points=False, extra=[("mine", mine)])
    assert plugins.accessors.registration("local").plugin == "mine"


def test_unknown_name_lists_choices():
    plugins = load_plugins(entry_points=False)
    with pytest.raises(PluginError, match="unknown kernel 'nope'; choices: python"):
        plugins.kernels.get("nope")


def test_failing_plugin_is_named():
    def boom(register):
        raise RuntimeError("kaputt")

    bad = _plugin_module("bad", commy_register_transports=boom)
    with pytest.raises(PluginError, match="plugin 'bad_plugin' failed in commy_register_transports"):
        load_plugins(entry_points=False, extra=[("bad_plugin", bad)])


def test_invalid_registration_rejected():
    bad = _plugin_module("bad", commy_register_kernels=lambda register: register("", object))
    with pytest.raises(PluginError, match="invalid name"):
        load_plugins(entry_points=False, extra=[("bad_plugin", bad)])
    bad2 = _plugin_module("bad2", commy_register_kernels=lambda register: register("x", 42))
    with pytest.raises(PluginError, match="non-callable"):
        load_plugins(entry_points=False, extra=[("bad_plugin2", bad2)])


def test_plugin_discovery_is_cheap():
    code = (
        "import sys, time; t=time.perf_counter(); from commy.plugins import load_plugins; "
        "load_plugins(); print('numba' in sys.modules, '_cffi_backend' in sys.modules)"
    )
    out = subprocess.check_output([sys.executable, "-c", code], text=True).split()
    assert out == ["False", "False"], "plugin entry modules must not import numba or cffi"
