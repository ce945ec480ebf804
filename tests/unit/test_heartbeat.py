"""The gateway's WebSocket heartbeat: each socket pings on its own period, so sockets opened together drift apart."""

from __future__ import annotations

from services.gateway.app import HEARTBEAT_S, heartbeat_s


def test_each_socket_draws_its_own_period_from_the_range() -> None:
    low, high = HEARTBEAT_S
    periods = [heartbeat_s() for _ in range(2_000)]
    assert all(low <= p <= high for p in periods)
    # Spread over the whole range, not one value: 10,000 sockets opened in one second would otherwise ping in
    # the same second forever. Ten equal bins of the range each get some of 2,000 draws.
    width = (high - low) / 10
    bins = {min(int((p - low) / width), 9) for p in periods}
    assert bins == set(range(10))


def test_the_range_stays_under_a_proxys_idle_timeout() -> None:
    low, high = HEARTBEAT_S
    assert 0 < low < high < 60  # nginx's proxy_read_timeout (ingress-nginx's default) is 60 s
