"""What runs on an assessor's laptop: the follower (``Console``), its SQLite store and the
web app. Imports shared modules only: never the recorder, capture or engine."""
