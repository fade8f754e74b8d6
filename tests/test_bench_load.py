"""The load benchmark's invariants on a short run: nothing lost, nothing torn, all converge."""

from __future__ import annotations

import pytest

from commy.bench.load import run_load_bench


def test_short_load_run_loses_nothing():
    r = run_load_bench(clients=4, local_writers=2, subscribers=2, seconds=3.0, client_procs=1,
                       local_rate=1000.0, redis=False)
    assert r["acked_writes"] > 0 and r["local_writes"] > 0
    assert r["lost_writes"] == 0
    assert r["failed_requests"] == 0
    assert r["torn_reads"] == 0 and r["tear_checks"] > 0
    assert r["subscribers_converged"] is True
    assert r["server_rss_mb_max"] > 0
    for key in ("clients", "acked_writes", "lost_writes", "torn_reads", "writes_per_s",
                "events_per_s", "server_rss_mb_max"):
        assert key in r


@pytest.mark.soak
def test_soak_full_load_defaults():
    """The benchmark's defaults (16 remote clients, 2 local writers, 20 s): opt-in, `pytest -m soak`."""
    r = run_load_bench(redis=False)
    assert r["clients"] >= 16 and r["local_writers"] >= 2 and r["seconds"] >= 20
    assert r["lost_writes"] == 0 and r["torn_reads"] == 0 and r["failed_requests"] == 0
    assert r["subscribers_converged"] is True
