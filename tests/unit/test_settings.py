"""Settings: each default declared once (on the dataclass), METRICS_PORT among them."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from services.common import config

CONFIG_PY = Path(config.__file__)


def variables_read() -> set[str]:
    """Every variable name load() passes to a reader (the first argument, an upper-case literal)."""
    tree = ast.parse(CONFIG_PY.read_text())
    load = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load")
    return {
        call.args[0].value
        for call in ast.walk(load)
        if isinstance(call, ast.Call)
        and call.args
        and isinstance(call.args[0], ast.Constant)
        and isinstance(call.args[0].value, str)
        and call.args[0].value.isupper()
    }


def test_with_nothing_set_every_setting_is_the_dataclass_default(monkeypatch: pytest.MonkeyPatch) -> None:
    names = variables_read()
    assert {"METRICS_PORT", "SHUTDOWN_GRACE_S", "DATABASE_URL"} <= names
    for name in names:
        monkeypatch.delenv(name, raising=False)
    assert config.load() == config.Settings()


def test_every_field_is_read_from_the_environment() -> None:
    tree = ast.parse(CONFIG_PY.read_text())
    load = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "load")
    keywords = {kw.arg for call in ast.walk(load) if isinstance(call, ast.Call) for kw in call.keywords}
    assert {f.name for f in dataclasses.fields(config.Settings)} <= keywords


def test_the_metrics_port_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICS_PORT", raising=False)
    defaults = config.load()
    assert [defaults.metrics_port_of(s) for s in ("orders", "router", "executor", "notifier")] == [
        9461,
        9462,
        9463,
        9464,
    ]
    monkeypatch.setenv("METRICS_PORT", "0")
    assert config.load().metrics_port_of("orders") == 0  # no endpoint (tests, several meshes on one host)
    monkeypatch.setenv("METRICS_PORT", "19461")
    assert config.load().metrics_port_of("router") == 19461
    monkeypatch.setenv("METRICS_PORT", "nine")
    with pytest.raises(config.ConfigError, match="METRICS_PORT"):
        config.load()
