"""The assessor web console (docs/console.md): app.py (HTTP), state.py (room model), reports.py."""
