"""A category read as a float on one side (a CSV's 0.0/1.0) and written as a whole number on the
other (a DP release that made the column a 0/1 flag writes 0/1) is the same level: sklearn's digits
at ε = 1 scored such pixels at total variation 1.00, 'disjoint', with 96–97 % zeros on both sides."""
import numpy as np
import pandas as pd
import pytest

from clinsynth.evaluate.fidelity import column_scores, cramers_v, dimension_wise_probability
from clinsynth.evaluate.utility import as_features
from clinsynth.schema import ColumnSpec, Schema


@pytest.fixture
def sides():
    schema = Schema(columns=[ColumnSpec(name="pixel", kind="binary", categories=[0, 1]),
                             ColumnSpec(name="other", kind="binary", categories=[0, 1])])
    real = pd.DataFrame({"pixel": [0.0] * 90 + [1.0] * 10, "other": [0.0, 1.0] * 50})
    synthetic = pd.DataFrame({"pixel": [0] * 90 + [1] * 10, "other": [0, 1] * 50})
    return real, synthetic, schema


def test_whole_floats_and_integers_are_one_level(sides):
    real, synthetic, schema = sides
    assert [s.value for s in column_scores(real, synthetic, schema)] == [0.0, 0.0]
    dwp = dimension_wise_probability(real, synthetic, schema)
    assert dwp.real == dwp.synthetic == [0.1, 0.5]
    assert cramers_v(real["pixel"], synthetic["pixel"]) == pytest.approx(1.0)
    assert as_features(real, schema)["pixel"].tolist() == as_features(synthetic, schema)["pixel"].tolist()


def test_other_values_keep_their_text():
    from clinsynth.evaluate.bounds import level_text

    assert [level_text(v) for v in (1.0, 2.5, "1.0", True, np.int64(3), np.float32(4.0))] == \
        ["1", "2.5", "1.0", "True", "3", "4"]
