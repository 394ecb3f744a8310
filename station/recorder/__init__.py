"""What runs under the station's own account: recorder loop, journal, replay, publisher,
hand-over server, assessor-command validation, status and report. Imports shared modules, the engine
and its own, never the capture or console."""
