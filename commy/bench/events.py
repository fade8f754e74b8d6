"""``commy bench events``: change-event latency, writer process → watcher process.

Latency = time from the writer's ``perf_counter_ns()`` (CLOCK_MONOTONIC, shared by all
processes) written into the variable, to the watcher's callback for that event. The
watcher runs in its own process; callbacks run in its watcher thread (the lowest-latency
delivery; a blocking ``wait_for_file_change`` adds one thread hand-off).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time

from commy.bench.local import _pct, latency_summary

ctx = mp.get_context("spawn")
#: events.spin_us of the polling variant: longer than the 3 ms between its writes
SPIN_US = 5000


def _watch_child(path: str, wakeup: str, ready, done, out, spin_us: float = 0) -> None:
    from commy.virtual_file import VirtualServiceFile

    vf = VirtualServiceFile.open(path, readonly=True)
    lat: list[float] = []
    # callbacks, variable changes (names in events), commits covered (seq numbers),
    # gaps (an event not starting where the previous one ended), last new_seq
    stats = [0, 0, 0, 0, None]
    perf = time.perf_counter_ns

    def on_event(event) -> None:
        now = perf()
        stats[0] += 1
        stats[1] += len(event.variables)
        stats[2] += event.new_seq - event.old_seq
        if stats[4] is not None and event.old_seq != stats[4]:
            stats[3] += 1
        stats[4] = event.new_seq
        if "t" in event.variables:
            lat.append((now - vf.read("t")) / 1000)

    vf.on_file_change(on_event)
    vf.start_file_monitoring(wakeup=wakeup, sweep_interval_s=0, spin_us=spin_us)
    cpu0, wall0 = time.process_time(), time.monotonic()
    ready.set()
    done.wait(120)
    # CPU seconds this process used per second of the run (1.0 = one core kept busy)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    time.sleep(0.2)
    # A full diff now must find nothing: every change was already named by an event.
    # (An event it does find counts as late, i.e. missed by the wake-up path.)
    late = vf._watcher.check("sweep") is not None if vf._watcher is not None else True
    vf.close()
    out.put((lat, stats + [late], cpu))


def _floor_child(path: str, ready, done, out) -> None:
    """The fast path's floor: a thread asleep in the same futex waiter, stamping the time
    it wakes and nothing else (no diff, no event, no callback)."""
    from commy import fileformat as ff
    from commy.virtual_file import VirtualServiceFile
    from commy.waiters import default_waiter

    vf = VirtualServiceFile.open(path, readonly=True)
    vf.adjust_listener_count(ff.OFF_WAITERS, +1)  # so that writers issue the wake
    waiter = default_waiter().open(path)
    woke: list[int] = []  # perf_counter_ns() at each wake that saw the word move
    perf = time.perf_counter_ns
    last = waiter.value
    ready.set()
    while not done.is_set():
        word = waiter.wait(last, 0.05)
        if word != last:
            woke.append(perf())
            last = word
    out.put(woke)
    vf.adjust_listener_count(ff.OFF_WAITERS, -1)
    waiter.close()
    vf.close()


def _floor_latency(path: str, samples: int, gap_s: float) -> dict:
    """Writer stamps, then writes; the floor child notes when it woke: µs between."""
    from commy.virtual_file import VirtualServiceFile

    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_floor_child, args=(path, ready, done, out))
    child.start()
    ready.wait(30)
    time.sleep(0.2)
    stamps = []
    with VirtualServiceFile.open(path) as vf:
        for i in range(samples):
            stamps.append(time.perf_counter_ns())
            vf.write("t", i)
            time.sleep(gap_s)
    done.set()
    woke = out.get(timeout=60)
    child.join(10)
    # Pair each wake with the latest write stamped before it (one write per gap).
    lat, j = [], 0
    for t in woke:
        while j + 1 < len(stamps) and stamps[j + 1] <= t:
            j += 1
        if stamps[j] <= t:
            lat.append((t - stamps[j]) / 1000)
    lat = lat[3:]
    return latency_summary(lat)


def _latency(path: str, wakeup: str, samples: int, gap_s: float, say, spin_us: float = 0) -> dict:
    """Event latency summary, plus ``write_us_p50`` (how long the writer's ``vf.write``
    took, stamp to return: part of every latency) and ``watcher_cpu`` (CPU seconds per
    second the watcher process used)."""
    from commy.virtual_file import VirtualServiceFile

    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_watch_child, args=(path, wakeup, ready, done, out, spin_us))
    child.start()
    ready.wait(30)
    time.sleep(0.2)
    perf = time.perf_counter_ns
    writes: list[float] = []
    with VirtualServiceFile.open(path) as vf:
        for i in range(samples):
            stamp = perf()
            vf.write("t", stamp)
            writes.append((perf() - stamp) / 1000)
            time.sleep(gap_s)
            if i % 50 == 0:
                say(f"bench events: {wakeup} {i}/{samples}")
    done.set()
    lat, _stats, cpu = out.get(timeout=60)
    child.join(10)
    lat = lat[3:]  # the first wake-ups include thread start-up
    summary = latency_summary(lat)
    summary["write_us_p50"] = round(_pct(writes[3:], 0.5), 1)
    summary["watcher_cpu"] = round(cpu, 2)
    return summary


def _fanout(path: str, subscribers: int, seconds: float, variables: int, say, gap_s: float = 0.0) -> dict:
    """Writer rounds of ``variables`` writes (one announce per round, `vf.batch()`),
    ``gap_s`` apart (0: as fast as the writer can), to ``subscribers`` futex watcher
    processes."""
    from commy.virtual_file import VirtualServiceFile

    children = []
    for _ in range(subscribers):
        ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
        p = ctx.Process(target=_watch_child, args=(path, "futex", ready, done, out))
        p.start()
        children.append((p, ready, done, out))
    for _p, ready, _d, _o in children:
        ready.wait(60)
    time.sleep(0.3)
    say(f"bench events: fan-out to {subscribers} subscribers, {variables} variable(s) per round")
    names = [f"n{i}" for i in range(variables)]
    writes = rounds = 0
    with VirtualServiceFile.open(path) as vf:
        first_seq = vf.change_seq
        end = time.monotonic() + seconds
        start = time.monotonic()
        while time.monotonic() < end:
            with vf.batch():
                for name in names:
                    vf.write(name, writes)
                    writes += 1
            rounds += 1
            if gap_s:
                time.sleep(gap_s)
        elapsed = time.monotonic() - start
        final_seq = vf.change_seq
    for _p, _r, done, _o in children:
        done.set()
    callbacks = changes = commits = gaps = 0
    tails: list[int | None] = []
    complete = True
    for p, _r, _d, out in children:
        _lat, (n_cb, n_changes, n_commits, n_gaps, last, late), _cpu = out.get(timeout=60)
        callbacks += n_cb
        changes += n_changes
        commits += n_commits
        gaps += n_gaps
        # The last event ends at the writer's last commit, or one short of it: a check
        # that lands between a write's version store and its sequence store names the
        # variable but ends one short, and that last sequence number is folded into the
        # next event (there is none after the run). `late` proves nothing was unnamed.
        tail = final_seq - last if last is not None else None
        tails.append(tail)
        complete = complete and n_gaps == 0 and not late and tail in (0, 1)
        p.join(10)
    return {
        "subscribers": subscribers,
        "variables_per_round": variables,
        "rounds_per_s": round(rounds / elapsed),
        "writes_per_s": round(writes / elapsed),
        # Each subscriber's events tile the sequence without a gap up to the writer's
        # last commit (or the one before, see above) and a final full diff finds nothing
        # unnamed: every change was announced to every one.
        "complete": complete
        and commits == sum(final_seq - first_seq - t for t in tails if t is not None),
        "final_seq_lag": tails,
        "callbacks_per_s": round(callbacks / elapsed),
        "variable_changes_per_s": round(changes / elapsed),
        "commits_delivered_per_s": round(commits / elapsed),
    }


def _redis_keyspace_rtt(samples: int) -> tuple[float | None, str | None]:
    from commy.bench.redis_server import redis_server

    with redis_server(("--notify-keyspace-events", "K$")) as (port, reason):
        if port is None:
            return None, reason
        ready = ctx.Event()
        child = ctx.Process(target=_redis_responder, args=(port, ready))
        child.start()
        ready.wait(30)
        import redis

        r = redis.Redis(port=port)
        ps = r.pubsub(ignore_subscribe_messages=True)
        ps.subscribe("__keyspace@0__:pong")
        while ps.get_message(timeout=0.1) is not None:
            pass
        rtts = []
        for i in range(samples):
            t0 = time.perf_counter()
            r.set("ping", i)
            deadline = time.monotonic() + 5
            while ps.get_message(timeout=1) is None:
                if time.monotonic() > deadline:
                    return None, "redis keyspace notification never arrived"
            rtts.append((time.perf_counter() - t0) * 1e6)
        r.set("ping", "stop")
        child.join(10)
        if child.is_alive():
            child.kill()
        return round(_pct(rtts[5:], 0.5), 1), None


def _redis_responder(port: int, ready) -> None:
    import redis

    r = redis.Redis(port=port)
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("__keyspace@0__:ping")
    ready.set()
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 10:
        msg = ps.get_message(timeout=1)
        if msg is None:  # a timeout, or the (ignored) subscribe confirmation
            continue
        idle_since = time.monotonic()
        if r.get("ping") == b"stop":
            return
        r.set("pong", 1)


def run_events_bench(progress=None, samples: int = 300, fanout_seconds: float = 2.0) -> dict:
    from commy.virtual_file import VirtualServiceFile

    say = progress or (lambda m: None)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="commy-bench-events-") as tmp:
        with VirtualServiceFile.create(tmp) as vf:
            vf.allocate("t", "i64")
            vf.allocate("n", "i64")
            path = str(vf.path)
        with VirtualServiceFile.create(tmp) as vf:  # the fan-out's own service
            for i in range(8):
                vf.allocate(f"n{i}", "i64")
            fan_path = str(vf.path)
        local = _latency(path, "doorbell", max(samples // 3, 30), 0.02, say)
        fast = _latency(path, "futex", samples, 0.003, say)
        # ~3-5k updates/s keeps the watcher's core awake (FACTS: idle vCPUs are halted
        # and each cross-core wake costs ~50 us before any code runs).
        hot = _latency(path, "futex", samples * 3, 0.0002, say)
        # The fast path with events.spin_us longer than the gap: the watcher polls the
        # word instead of sleeping, so no wake-up is paid (a core kept busy instead).
        spin = _latency(path, "futex", samples, 0.003, say, spin_us=SPIN_US)
        say("bench events: the fast path's floor (a bare futex wake, no commy code after it)")
        floor = _floor_latency(path, samples, 0.003)
        out["local_event_us_p50"], out["local_event_us_p99"] = local["p50"], local["p99"]
        out["fast_event_us_p50"], out["fast_event_us_p99"] = fast["p50"], fast["p99"]
        out["fast_event_hot_us_p50"], out["fast_event_hot_us_p99"] = hot["p50"], hot["p99"]
        # Same gap as fast_event_us: a Python thread woken from the same futex, doing
        # nothing else. fast_event_us minus this is what commy's code costs.
        out["fast_event_floor_us_p50"], out["fast_event_floor_us_p99"] = floor["p50"], floor["p99"]
        out["fast_event_spin_us_p50"], out["fast_event_spin_us_p99"] = spin["p50"], spin["p99"]
        out["fast_event_spin"] = {
            "spin_us": SPIN_US,
            "watcher_cpu": spin["watcher_cpu"],
            "watcher_cpu_without_spin": fast["watcher_cpu"],
            "note": "the same writes with config events.spin_us = spin_us: the watcher "
            "polls the sequence word for that long after each wake-up instead of "
            "sleeping; watcher_cpu = CPU seconds per second of the watcher process",
        }
        # The writer's own vf.write (stamp to return) at the 3 ms gap: part of every
        # latency above, and what a cold code path costs on this machine (~0.5 us warm).
        out["fast_event_writer_write_us_p50"] = fast["write_us_p50"]
        out["local_samples"], out["fast_samples"] = local["samples"], fast["samples"]
        from commy.waiters import default_waiter

        out["fast_waiter"] = default_waiter().name
        try:
            from commy.bench.events_remote import remote_event_latency

            # The headline writer is the blocking client (commy's fastest remote round
            # trip, as in `commy bench remote`); the async client's figure is beside it.
            remote = remote_event_latency(samples, say)
            out["remote_event_us_p50"] = remote["blocking"]["p50"]
            out["remote_event_us_p99"] = remote["blocking"]["p99"]
            out["remote_writer"] = "blocking (connect_sync)"
            out["remote_event_async_writer_us_p50"] = remote["async"]["p50"]
            out["remote_event_async_writer_us_p99"] = remote["async"]["p99"]
            # The same path with the processes kept awake (a write every 0.3 ms instead
            # of 3 ms): what the code costs, without this VM's idle-vCPU wake-ups.
            hot_remote = remote_event_latency(samples, say, gap_s=0.0003, writers=("blocking",))["blocking"]
            out["remote_event_hot_us_p50"] = hot_remote["p50"]
            out["remote_event_hot_us_p99"] = hot_remote["p99"]
        except ImportError as exc:
            out["remote_event_us_p50"] = out["remote_event_us_p99"] = None
            out["remote_reason"] = f"remote path not available: {exc}"
        fan = _fanout(fan_path, 8, fanout_seconds, 1, say)
        out["fanout_events_per_s"] = fan["callbacks_per_s"]
        out["fanout_counts"] = (
            "FileChangeEvents delivered per second, summed over 8 subscriber processes "
            "(futex path), while one writer process writes one variable per commit as fast "
            "as it can; an event covers the commits since the subscriber's last wake-up. "
            "'complete': every subscriber's events tile the sequence numbers without a gap "
            "up to the writer's last commit (or one short: final_seq_lag) and a final full "
            "diff in each subscriber finds no change left unnamed, so every change reached "
            "every subscriber."
        )
        out["fanout"] = fan
        # Beside it: the writer paced (~0.1 ms sleeps, ~3k commits/s), and 8 variables
        # per commit (events then name 8 variables each).
        out["fanout_paced"] = _fanout(fan_path, 8, fanout_seconds, 1, say, gap_s=0.0001)
        out["fanout_8_variables"] = _fanout(fan_path, 8, fanout_seconds, 8, say)
        try:
            from commy.bench.events_remote import remote_fanout

            # The same fan-out through the server to 8 remote subscribers (WSS/TLS),
            # reported beside the local one: the key above stays the local futex path.
            out["fanout_remote"] = remote_fanout(8, 8, fanout_seconds, say)
        except ImportError as exc:
            out["fanout_remote"] = {"reason": f"remote path not available: {exc}"}
    say("bench events: redis keyspace notifications")
    out["redis_notify_rtt_us_p50"], reason = _redis_keyspace_rtt(min(samples, 300))
    if reason:
        out["redis_reason"] = reason
    out["targets"] = {
        "local_event_us_p50_max": 10_000,
        "fast_event_us_p50_max": 50,
        "remote_event_us_p50_max": 1_000,
        "fanout_events_per_s_min": 50_000,
    }
    return out
