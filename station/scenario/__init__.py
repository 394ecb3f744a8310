"""The built-in demo scenario: a seeded, reproducible simulated exam with ground truth.

- ``plan``: what happens when (speech, keys, mouse, focus, contacts), from the seed;
- ``synth``: synthetic headset audio (both channels) for the plan;
- ``truth``: the ground truth computed from the plan with the engine's definitions;
- ``exam``: ``Scenario``, which turns plan and audio into station events (through the real VAD).

The paced source that feeds a running station is ``station.capture.scenario.ScenarioSource``.
"""

from station.scenario.exam import Scenario, exam_scenario

__all__ = ["Scenario", "exam_scenario"]
