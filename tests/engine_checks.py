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
