"""Evaluation of a synthetic table against real training and holdout records.

``clinsynth.evaluate(real_train=…, real_test=…, synthetic=…, schema=…)`` is the documented call
(see ``suite.evaluate``), while ``clinsynth.evaluate.fidelity`` and friends stay importable
submodules: the package module is made callable rather than shadowed by a function, which would
break ``import clinsynth.evaluate.x as y``.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from clinsynth.evaluate.suite import evaluate

        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
