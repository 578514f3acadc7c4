"""Offline tools built on the daemon's own code (the trace simulator)."""
