"""station: the instrumented exam station for the call centre operator certificate.

Time is integer nanoseconds of ``time.monotonic_ns()`` everywhere ("station time");
see ``station.clock``.
"""

__version__ = "0.1.0"
