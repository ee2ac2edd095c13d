"""``easyrpc stubgen``: typed ``Protocol`` classes for a live server's functions.

:func:`render_module` writes the module from the descriptions a proxy received
(``render.py``, each piece checked by ``exprs.py``); :func:`differences` compares a
written module with the server's (``check.py``); :func:`run_stubgen` is the command.
"""

from __future__ import annotations

from .check import differences
from .command import EXIT_DRIFT, run_stubgen
from .render import class_name_for, render_module

__all__ = ["EXIT_DRIFT", "class_name_for", "differences", "render_module", "run_stubgen"]
