"""``station calibrate``: headset calibration (delegates to the ``calibration`` package)."""


def register(subparsers) -> None:
    from calibration.cli import add_arguments
    parser = subparsers.add_parser("calibrate", help="calibrate a headset (profile + certificate); "
                                   "P.56 level of a WAV file")
    add_arguments(parser)
