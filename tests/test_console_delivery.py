"""Stored before delivered: a message reaches the console's application only after its store
commit, and a console killed right after a delivery has that message in its store.

Real parts: the test station (tests/streaming_station.py: real Journal + Publisher, CURVE) at
100 messages/s; the console library in this process, and `station console --plain` in its own
process for the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from station import config
from station.console.follower import Console
from station.console.store import ConsoleStore
from tests.streaming_station import Rig
from tests.support import station_cmd

pytestmark = pytest.mark.timeout(90)


def _stored(path, session) -> set[int]:
    """Seqs stored (in the recent log or committed in the database), seen by a reader of its own."""
    reader = ConsoleStore(path, readonly=True)
    try:
        return set(reader.seqs("st-1", session))
    finally:
        reader.close()


@pytest.mark.parametrize("cycle_ns", [0, 2_000_000], ids=["every-wake-up", "paced-2ms"])
def test_every_delivered_message_is_already_stored(tmp_path, cycle_ns):
    rig = Rig(tmp_path)
    station, ready = rig.start_station(rate=100)
    con = Console(config.load([rig.console_cfg("console-b")], system=False))
    con.cycle_ns = cycle_ns    # the default (store and deliver at every wake-up) and the paced loop
    con.start()
    seen = []
    try:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            batch = con.poll(100)
            if batch:
                # checked at once, by another connection: only committed rows are visible to it
                missing = {m.seq for m in batch} - _stored(tmp_path / "console-b.sqlite", ready["session"])
                assert not missing, f"delivered before they were stored: {sorted(missing)[:10]}"
                seen += [m.seq for m in batch]
    finally:
        con.stop()
        station.terminate()
        station.wait(15)
    assert len(seen) > 150 and seen == list(range(seen[0], seen[0] + len(seen)))


def test_a_console_killed_right_after_delivery_has_the_message_and_resumes_after_it(tmp_path):
    rig = Rig(tmp_path)
    station, ready = rig.start_station(rate=100)
    cfg = rig.console_cfg("console-a")
    store = tmp_path / "console-a.sqlite"
    cmd = station_cmd("--config", str(cfg), "--no-system-config", "console", "--plain")
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        printed = []
        for raw in proc.stdout:           # each line is printed after poll() delivered it
            parts = raw.decode().split()
            if len(parts) > 3 and not raw.startswith(b"#") and parts[2].isdigit():
                printed.append(int(parts[2]))
                if len(printed) >= 50:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        printed += [int(p.split()[2]) for p in proc.stdout.read().decode().splitlines()
                    if not p.startswith("#") and len(p.split()) > 3 and p.split()[2].isdigit()]
        proc.wait(10)
        assert len(printed) >= 50
        stored = _stored(store, ready["session"])
        assert set(printed) <= stored, f"printed but not stored: {sorted(set(printed) - stored)[:10]}"
        ro = ConsoleStore(store, readonly=True)
        saved = ro.sessions("st-1")[0]["next_seq"]
        resume = ro.resume_seq("st-1", ready["session"], saved)
        ro.close()
        assert resume > max(printed)
        # restarted: it goes on right after what its store holds, nothing delivered twice
        out = subprocess.run(cmd[:-1] + ["--plain", "--duration", "2"], capture_output=True,
                             timeout=30).stdout.decode().splitlines()
        again = [int(p.split()[2]) for p in out if not p.startswith("#") and len(p.split()) > 3
                 and p.split()[2].isdigit()]
        assert again and again[0] == resume and not set(again) & set(printed), (again[:3], resume)
        assert again == list(range(resume, resume + len(again)))
    finally:
        station.terminate()
        station.wait(15)


def test_progress_saved_late_is_taken_from_the_stored_messages(tmp_path):
    """ConsoleStore.resume_seq: past the seqs stored after the saved next_seq, stops at a hole."""
    st = ConsoleStore(tmp_path / "s.sqlite")
    from station.protocol import Message
    msgs = [Message("st-1", "sess-1", q, "summary", q, q, b"\x80", {}) for q in (3, 4, 5, 7)]
    st.add(msgs, 0)
    st.commit()
    assert st.resume_seq("st-1", "sess-1", 3) == 6
    assert st.resume_seq("st-1", "sess-1", 6) == 6
    assert st.resume_seq("st-1", "sess-1", 7) == 8
    assert st.resume_seq("st-1", "other", 3) == 3
    st.close()


def test_apoll_in_an_event_loop_gets_every_message_in_order_times_out_and_ends_on_stop(tmp_path):
    """Console.apoll(), as the web console uses it: woken from the I/O thread, each message once,
    in order and already stored; a timeout gives []; stop() ends a wait without a timeout."""
    import asyncio
    rig = Rig(tmp_path)
    station, ready = rig.start_station(rate=100)
    con = Console(config.load([rig.console_cfg("console-b")], system=False))
    con.start()
    stopped = False

    delays_ms = []

    async def follow() -> list[int]:
        seen, end = [], time.monotonic() + 3
        while time.monotonic() < end:
            batch = await con.apoll(1000)   # woken by the delivery, not by this timeout
            now = time.monotonic_ns()       # (the station stamps t_ns on this machine's clock)
            if batch:
                delays_ms.extend((now - m.t_ns) / 1e6 for m in batch)
                missing = {m.seq for m in batch} - _stored(tmp_path / "console-b.sqlite", ready["session"])
                assert not missing, f"delivered before they were stored: {sorted(missing)[:10]}"
                seen += [m.seq for m in batch]
        return seen

    async def quiet_then_stop() -> tuple[list, float, list]:
        while await con.apoll(500):       # what is still on its way
            pass
        t0 = time.monotonic()
        got = await con.apoll(200)
        waited = time.monotonic() - t0
        waiting = asyncio.ensure_future(con.apoll(None))
        while not waiting.done() and not con._app_async:   # until it waits
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, con.stop)
        return got, waited, await asyncio.wait_for(waiting, 5)

    try:
        seen = asyncio.run(follow())
        assert len(seen) > 150 and seen == list(range(seen[0], seen[0] + len(seen)))
        live = sorted(delays_ms[len(delays_ms) // 2:])      # after the catch-up at the start
        assert live[len(live) // 2] < 100, f"median delay {live[len(live) // 2]:.0f} ms"
        station.terminate()
        station.wait(15)
        got, waited, at_stop = asyncio.run(quiet_then_stop())
        stopped = True
        assert got == [] and 0.15 <= waited < 2.0, (got[:3], waited)
        assert at_stop == []
    finally:
        if not stopped:
            con.stop()
        if station.poll() is None:
            station.terminate()
            station.wait(15)


@pytest.mark.parametrize("app", ["poll", "apoll"])
def test_the_console_stores_on_while_the_application_is_away(tmp_path, app):
    """The application's own thread (poll) or event loop (apoll) runs the console's I/O loop
    while it waits; when it is away (busy, or its event loop blocked), the I/O thread takes over
    within LEAD_GRACE_NS and messages are still stored; afterwards the application gets every
    message once and in order."""
    import asyncio
    import threading
    rig = Rig(tmp_path)
    station, ready = rig.start_station(rate=100)
    con = Console(config.load([rig.console_cfg("console-c", key="console-b")], system=False))
    store = tmp_path / "console-c.sqlite"
    con.start()
    seen: list[int] = []
    grew: list[int] = []

    def watch(start: int) -> None:      # from its own thread: the store while the app is away
        end = time.monotonic() + 3
        while time.monotonic() < end:
            n = len(_stored(store, ready["session"]))
            if n >= start + 60:
                grew.append(n - start)
                return
            time.sleep(0.05)

    def away() -> None:
        w = threading.Thread(target=watch, args=(len(_stored(store, ready["session"])),))
        w.start()
        w.join()                          # the application does nothing meanwhile

    async def take_async(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seen.extend(m.seq for m in await con.apoll(100))

    def take(seconds: float) -> None:
        if app == "apoll":
            asyncio.run(take_async(seconds))
            return
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            seen.extend(m.seq for m in con.poll(100))

    async def blocked_loop() -> None:   # an event loop that runs the console, then blocks
        await take_async(1.5)
        away()
        await take_async(1.5)

    try:
        if app == "apoll":
            asyncio.run(blocked_loop())
        else:
            take(1.5)
            away()
            take(1.5)
        take(0.5)                          # and the other way of taking messages after it
        if app == "apoll":
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                seen.extend(m.seq for m in con.poll(100))
    finally:
        con.stop()
        station.terminate()
        station.wait(15)
    assert grew, "nothing was stored while the application was away"
    assert len(seen) > 300 and seen == list(range(seen[0], seen[0] + len(seen)))
