"""Real servers for tests, run as child processes: start, wait until ready, stop, show logs on failure."""
