"""Headset calibration for technicians (issue 6): noise floor, ITU-T P.56 speech level, earpiece
bleed, latency, VAD gate, optional serial rig; writes the headset profile the agent reads
(``station/headset.py``) and a certificate. Run as ``station calibrate`` or ``python -m calibration``.

Modules: ``p56`` (active speech level), ``measure`` (measurements on arrays), ``audio``
(sounddevice I/O), ``rig`` (serial calibrator and sound level meter), ``procedure`` (the guided
steps), ``certificate``, ``profile_writer``, ``cli``, ``simulator`` (a rig on a pseudo-terminal for
tests and demos). See docs/calibration.md.
"""
