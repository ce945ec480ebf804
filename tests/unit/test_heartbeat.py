"""The gateway's WebSocket heartbeat: each socket pings on its own period, so sockets opened together drift apart."""

from __future__ import annotations

from aiohttp.helpers import calculate_timeout_when

from services.gateway.app import HEARTBEAT_S, TIMEOUT_CEIL_THRESHOLD_S, heartbeat_s


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


def test_heartbeat_timers_fire_when_due_not_rounded_to_the_second() -> None:
    # aiohttp's own rule for a timer's deadline, with the threshold the gateway's runner passes: a ping and
    # its pong deadline (half the period) fall where the drawn period puts them, so 10,000 sockets' pings
    # spread over each second instead of bursting at its boundary.
    now = 1_000.123
    for _ in range(200):
        period = heartbeat_s()
        for delay in (period, period / 2):
            assert calculate_timeout_when(now, delay, TIMEOUT_CEIL_THRESHOLD_S) == now + delay
    # With aiohttp's default threshold (5 s) the same timers would be rounded up to a whole second.
    assert calculate_timeout_when(now, HEARTBEAT_S[0], 5) == 1_016
