"""One module per ``station`` sub-command. Each exposes ``register(subparsers)`` which adds its
parser and sets ``func`` (a callable taking the parsed args and returning an exit code)."""


def speed_arg(text: str) -> float:
    """argparse type of ``--speed``: a finite number > 0 and <= MAX_SPEED, else one clear usage
    error (exit 2), never a traceback (``station.capture.scenario.check_speed``)."""
    import argparse

    from station.capture.scenario import check_speed
    try:
        return check_speed(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (use --fast for as fast as the machine goes)") from None
