"""robobench test suite (a regular package, so tests.* modules import in worker processes)."""
