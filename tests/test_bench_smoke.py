"""`commy bench remote` and `commy bench events` on short runs: every key the issues name
is there and holds a measurement (the full runs are for the command line)."""

from __future__ import annotations

import shutil

import pytest

from commy.bench.events import run_events_bench
from commy.bench.remote import run_remote_bench

HAVE_REDIS = shutil.which("redis-server") is not None


def _positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


def test_remote_bench_reports_every_round_trip():
    r = run_remote_bench(n=150)
    for key in ("read_rtt_us_p50", "write_rtt_us_p50", "read_rtt_us_p99", "write_rtt_us_p99",
                "read_rtt_us_p50_spin", "write_rtt_us_p50_spin", "async_read_rtt_us_p50"):
        assert _positive(r[key]), key
    assert r["read_rtt_us_p50"] <= r["read_rtt_us_p99"]
    assert set(r["clients"]) >= {"sync", "sync_spin", "wss-lean", "wss"}
    if HAVE_REDIS:
        assert _positive(r["redis_get_rtt_us_p50"]) and _positive(r["redis_set_rtt_us_p50"])
        # CPU beside commy's (the server's figure comes in clock ticks: 0 on a short run)
        assert _positive(r["redis_client_cpu_us_per_rtt"])
        assert r["redis_server_cpu_us_per_rtt"] >= 0
        assert r["ratio_read_over_redis_get"] == pytest.approx(
            r["read_rtt_us_p50"] / r["redis_get_rtt_us_p50"], abs=0.01)
    else:
        assert r["redis_get_rtt_us_p50"] is None and r["redis_reason"]


def test_events_bench_reports_every_path_and_loses_nothing():
    r = run_events_bench(samples=40, fanout_seconds=0.5)
    for key in ("local_event_us_p50", "local_event_us_p99", "fast_event_us_p50", "fast_event_us_p99",
                "fast_event_floor_us_p50", "remote_event_us_p50", "remote_event_us_p99",
                "remote_event_async_writer_us_p50", "remote_event_hot_us_p50", "fanout_events_per_s",
                "fast_event_spin_us_p50", "fast_event_writer_write_us_p50"):
        assert _positive(r[key]), key
    assert r["fast_event_spin"]["spin_us"] > 0 and r["fast_event_spin"]["watcher_cpu"] > 0
    for fan in ("fanout", "fanout_paced", "fanout_8_variables"):
        assert r[fan]["complete"] is True, fan  # every commit reached every subscriber
        assert r[fan]["subscribers"] == 8
    if HAVE_REDIS:
        assert _positive(r["redis_notify_rtt_us_p50"])
    else:
        assert r["redis_notify_rtt_us_p50"] is None and r["redis_reason"]
