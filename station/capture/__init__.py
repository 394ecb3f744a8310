"""What runs in the candidate's graphical session: the sources (audio VAD, input, focus,
scenario) and the hand-over client. Imports shared modules and its own, never the recorder or console."""
