"""AUTH settings, Bearer parsing and the per-kind interceptors that carry the internal token."""

from __future__ import annotations

import grpc
import pytest

from services.common import auth
from services.common.config import ConfigError


def test_auth_is_off_by_default_and_apikey_needs_an_internal_token(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTH", "INTERNAL_TOKEN", "API_KEY_QUOTA_PER_MIN"):
        monkeypatch.delenv(name, raising=False)
    settings = auth.load()
    assert (settings.mode, settings.enabled, settings.quota_per_min) == ("off", False, 600)
    monkeypatch.setenv("AUTH", "apikey")
    with pytest.raises(ConfigError, match="INTERNAL_TOKEN"):
        auth.load()
    monkeypatch.setenv("INTERNAL_TOKEN", "x" * 16)
    monkeypatch.setenv("API_KEY_QUOTA_PER_MIN", "30")
    settings = auth.load()
    assert settings.enabled and settings.quota_per_min == 30
    assert settings.is_internal("x" * 16) and not settings.is_internal("y" * 16) and not settings.is_internal(None)
    for name, value in (("AUTH", "oauth"), ("API_KEY_QUOTA_PER_MIN", "0"), ("API_KEY_QUOTA_PER_MIN", "many")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            auth.load()
        monkeypatch.setenv(name, {"AUTH": "apikey", "API_KEY_QUOTA_PER_MIN": "30"}[name])


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("Bearer dex_abc", "dex_abc"),
        ("bearer  dex_abc ", "dex_abc"),
        ("Basic dex_abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer(value: str | None, key: str | None) -> None:
    assert auth.bearer(value) == key


def test_an_interceptor_for_every_call_kind_or_none_without_a_token() -> None:
    kinds = {
        grpc.aio.UnaryUnaryClientInterceptor,
        grpc.aio.UnaryStreamClientInterceptor,
        grpc.aio.StreamUnaryClientInterceptor,
        grpc.aio.StreamStreamClientInterceptor,
    }
    interceptors = auth.internal_interceptors("token-0123456789abcdef")
    # grpc.aio files an interceptor under the first kind it is: one object per kind, or streams go without it.
    assert {next(k for k in kinds if isinstance(i, k)) for i in interceptors} == kinds
    assert all(sum(isinstance(i, k) for k in kinds) == 1 for i in interceptors)
    assert auth.internal_interceptors("") == []
