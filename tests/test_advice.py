"""What a steward is told when a fit goes ahead weaker than the data: clinsynth's warnings as one
line each on the console, and the Bayesian network's advice when DP noise swamps the target."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from clinsynth.cli import _warnings_as_lines
from clinsynth.errors import ReleaseWarning, UtilityWarning
from clinsynth.models.registry import create
from clinsynth.schema import Schema


def test_clinsynth_warnings_are_one_line_each_and_said_once(capsys):
    with _warnings_as_lines(), warnings.catch_warnings():
        warnings.simplefilter("always")
        for _ in range(2):
            warnings.warn("column(s) bmi: no value could be located", ReleaseWarning, stacklevel=1)
        warnings.warn("someone else's", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("warning: column(s) bmi: no value could be located") == 1
    assert "ReleaseWarning" not in err and "warnings.warn(" not in err  # no Python format, no source line
    assert "warning: someone else's" not in err  # other libraries' warnings keep their own format


def _table(n: int, flags: int, positive: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    data = {f"f{j:02d}": (rng.random(n) < 0.3).astype(int) for j in range(flags)}
    data["age"] = np.round(60 + 10 * risk + rng.normal(0, 5, n))
    cut = np.quantile(risk, 1 - positive)
    data["y"] = np.where(risk > cut, "yes", "no")
    return pd.DataFrame(data)


def test_dp_network_warns_when_noise_swamps_the_rare_class():
    df = _table(1200, flags=80, positive=0.08)
    with pytest.warns(UtilityWarning, match=r"rarest class 'yes' has about [\d,]+ of 1,200 records"):
        create("dp-bayesnet", epsilon=1.0, seed=0, progress=False).fit(df, Schema.infer(df, target="y"))


def test_dp_network_is_quiet_when_the_tables_can_hold_the_target():
    df = _table(1200, flags=6, positive=0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UtilityWarning)
        create("dp-bayesnet", epsilon=1.0, seed=0, progress=False).fit(df, Schema.infer(df, target="y"))
