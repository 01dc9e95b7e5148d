"""Imports every derivation module so their ``@derivation`` builders register.

Discovery is by package listing: a new module in ``derive/`` that registers
derivations needs no edit here. Modules that register nothing (the core, the
CLI, the rendering) are imported too; that is harmless and keeps the rule simple.
"""

import importlib
import pkgutil

import derive

_SKIP = {"__main__", "catalog"}

for _info in sorted(pkgutil.iter_modules(derive.__path__), key=lambda m: m.name):
    if _info.name not in _SKIP:
        importlib.import_module(f"derive.{_info.name}")
