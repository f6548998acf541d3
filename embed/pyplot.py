"""matplotlib's pyplot on the Agg backend, for every figure both stages write (files only, never a
window, no display on servers), imported at the first figure: a process that draws nothing (a
server, a live stream, a dask worker between trainings) does not pay its import (a third of a
CPU-second)."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """matplotlib.pyplot, its backend set to Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
