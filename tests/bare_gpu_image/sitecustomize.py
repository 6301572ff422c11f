"""Simulates the bare GPU image on this machine: with this folder on PYTHONPATH, the top-level
modules named in $HIDE_MODULES (comma separated) behave as not installed: `import` raises
ModuleNotFoundError and importlib.util.find_spec returns None (a None entry in sys.modules does
both), so code that probes for them sees what it would see on an image without them."""

import os
import sys

for name in os.environ.get("HIDE_MODULES", "").split(","):
    if name:
        sys.modules[name] = None
