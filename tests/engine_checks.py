"""What the engine tests assert of two fitted Bayesian networks: the same network, table for table."""
from __future__ import annotations

import numpy as np

from clinsynth.models.bayesnet import BayesNet


def assert_same_network(a: BayesNet, b: BayesNet) -> None:
    """Same released schema, variables, parents and conditional tables (naming the first that differs)."""
    assert a.schema_ == b.schema_
    assert a.variables_ == b.variables_
    assert a.parents_ == b.parents_
    assert len(a.tables_) == len(b.tables_)
    for v, (x, y) in enumerate(zip(a.tables_, b.tables_)):
        assert np.array_equal(x, y), f"table of {a.variables_[v].name} differs"


def grid_probes() -> np.ndarray:
    """Values where a number-grid bucket computed from the grid's formula could slip: every fine
    edge, the doubles just below and above it, the midpoints, values off both ends, ±0, ±inf, NaN
    and the largest doubles (whose square overflows)."""
    from clinsynth.privacy.histograms import grid_edges

    edges = grid_edges("continuous")
    mids = (edges[1:] + edges[:-1]) / 2
    ends = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 1e30, -1e30, 1e200, -1e200, 1.7e308, -1.7e308, np.inf, -np.inf, np.nan]
    return np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), mids,
                           edges * 1.5, edges * 0.9999999, ends])


def assert_buckets_are_numpys(run, d) -> None:
    """``sql.bucket`` of :func:`grid_probes` through ``run(select_list) → list of int columns`` (an
    engine reading a table ``t`` with one DOUBLE column ``x`` holding the probes, in order) gives
    numpy's searchsorted buckets, on the fine and the coarse grid, with no search tree."""
    from clinsynth.engines import sql
    from clinsynth.privacy.histograms import bucket, coarse_edges, grid_edges

    x = grid_probes()
    for edges in (grid_edges("continuous"), coarse_edges("continuous")):
        text = sql.bucket("x", edges, d)
        assert "CASE" not in text  # the grid's formula, not a 601-edge search tree
        got = np.asarray(run(text), dtype=np.int64)
        want = bucket(edges, x)  # NaN: numpy sorts it last, so the top bucket, as the engines do
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, f"{bad.size} buckets differ, first at x={x[bad[0]]!r}: {got[bad[0]]} vs {want[bad[0]]}"
