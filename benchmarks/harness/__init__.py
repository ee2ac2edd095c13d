"""The benchmark runner's parts: virtualenvs, processes, systems, reports (see ../README.md)."""
