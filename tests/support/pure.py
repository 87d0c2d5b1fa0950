"""The pure-Python source of a module of the compiled core, whichever core runs (relay_edge/accel.py).

For the few tests that reach inside a module (patching a method to count its calls): a compiled
class takes no patches. The module is loaded from its ``.py`` under a private name; what it
imports from its package stays whichever core runs.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from relay_edge import accel


def pure_module(name: str) -> ModuleType:
    """``relay_edge.x.y`` loaded from ``relay_edge/x/y.py`` as ``relay_edge.x._pure_y``."""
    package, _, module = name.rpartition(".")
    key = f"{package}._pure_{module}"
    if key in sys.modules:
        return sys.modules[key]
    path = accel.PACKAGE.parent / (name.replace(".", "/") + ".py")
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
