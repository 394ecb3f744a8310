"""One module per ``station`` sub-command. Each exposes ``register(subparsers)`` which adds its
parser and sets ``func`` (a callable taking the parsed args and returning an exit code)."""
