"""A restarted console still fills a session it saw before the station restarted.

Real processes and sockets: the test station (tests/streaming_station.py: real Journal + real
Publisher, CURVE) and the console library. The console follows session 1, stops; session 1 goes on
without it and ends; the station restarts with a new session 2; the console restarts: it must
fetch session 1's tail from the station's journal (the restarted station serves its earlier
sessions) and follow session 2, with no gap recorded.
"""

from __future__ import annotations

import signal
import time

import pytest

from station import config
from station.console.follower import Console
from tests.streaming_station import Rig, journal_messages, store_messages
from tests.support import wait_for

pytestmark = [pytest.mark.timeout(120)]


def test_restarted_console_fills_the_tail_of_a_session_from_before_the_station_restart(tmp_path):
    rig = Rig(tmp_path)
    cfg = config.load([rig.console_cfg("console-a", extra="resync_ms = 1000")], system=False)
    store = tmp_path / "console-a.sqlite"
    station, ready = rig.start_station(rate=20)
    s1, j1 = ready["session"], ready["journal"]
    procs = [station]
    try:
        con = Console(cfg, deliver=False)
        con.start()
        wait_for(lambda: len(store_messages(store, "st-1", s1)) >= 20, 20, "console following session 1")
        con.stop()
        seen = len(store_messages(store, "st-1", s1))
        time.sleep(1.5)                              # session 1 goes on without the console ...
        station.send_signal(signal.SIGUSR1)          # ... and is complete
        wait_for(lambda: len(journal_messages(j1)) >= seen + 20, 10, "session 1's tail journaled")
        time.sleep(0.3)
        station.terminate()
        assert station.wait(15) == 0
        expected = journal_messages(j1)
        station, ready2 = rig.start_station(rate=20)  # a new process, a new session
        procs.append(station)
        s2 = ready2["session"]
        assert s2 != s1
        con = Console(cfg, deliver=False)
        con.start()
        try:
            wait_for(lambda: store_messages(store, "st-1", s1) == expected, 20,
                     "session 1 complete in the restarted console's store")
            wait_for(lambda: len(store_messages(store, "st-1", s2)) >= 10, 20, "session 2 followed")
            assert not [g for g in con.reader.gaps() if g["session"] == s1]
        finally:
            con.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(15)
