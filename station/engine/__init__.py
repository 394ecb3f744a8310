"""The metrics engine (pure, incremental): see ``core.Engine``; evidence per competence in
``evidence``; interval-set activity tracks in ``tracks``."""

from station.engine.core import Engine

__all__ = ["Engine"]
