"""Event sources: audio (VAD), input (keyboard, mouse), focus (active window), scenario (demo).

Each source implements ``station.sources.base.Source``: it runs its own thread(s), stamps events
on the station clock and hands them to an ``EventSink``. Sources never block on the sink and never
raise into the agent: failures become ``SourceHealth`` events and the source retries.
"""
