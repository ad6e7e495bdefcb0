"""Patient groups in the code tree (``models/code_groups.py``): bundles of codes stay together."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score

from clinsynth.data.ehr import CodeMatrix
from clinsynth.errors import ConfigError
from clinsynth.evaluate.codes import co_occurrence
from clinsynth.models.code_groups import bernoulli_mixture_groups, conditional_information, group_counts
import clinsynth as cs
from clinsynth.models.registry import create
from clinsynth.pipeline import split_patients
from clinsynth.schema import CodeBlock, Schema


def bundled_codes(n: int, bundles: int = 6, size: int = 25, seed: int = 0) -> tuple[CodeMatrix, np.ndarray]:
    """Patients each in one of ``bundles`` syndromes (or none): a syndrome's codes each present
    with probability 0.5, every code in the background at 2 %. Returns the matrix and the syndromes."""
    rng = np.random.default_rng(seed)
    syndrome = rng.integers(-1, bundles, size=n)
    p = np.full((n, bundles * size), 0.02)
    for b in range(bundles):
        p[np.ix_(syndrome == b, np.arange(b * size, (b + 1) * size))] = 0.5
    x = sp.csr_array((rng.random(p.shape) < p).astype(np.float32))
    ids = np.array([f"P{i:05d}" for i in range(n)])
    return CodeMatrix(x, [f"C{j:03d}" for j in range(x.shape[1])], ids, True), syndrome


def test_the_mixture_finds_planted_groups():
    codes, syndrome = bundled_codes(3000, seed=1)
    labels = bernoulli_mixture_groups(codes.matrix, 7, seed=0)
    assert adjusted_rand_score(syndrome, labels) >= 0.95
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # renumbered without gaps
    assert (bernoulli_mixture_groups(codes.matrix, 1, seed=0) == 0).all()


def test_group_counts_and_information_match_hand_counts():
    x = sp.csr_array(np.array([[1, 0], [1, 1], [0, 1], [1, 1]], dtype=np.float32))
    group = np.array([0, 0, 1, 1])
    coo = sp.coo_array(x)
    # code 0 has no parent (state 0); code 1's parent is code 0
    state = np.where(coo.col == 1, x.toarray()[coo.row, 0], 0).astype(np.int64)
    base = np.zeros((2, 2, 2))
    base[0, 0] = [2, 2]
    base[1] = [[0, 1], [2, 1]]  # code 0 absent: rows in group 0 / 1; code 0 present
    tables = group_counts(coo.col.astype(np.int64), state, group[coo.row], base)
    assert tables[0, 0].tolist() == [[0, 2], [1, 1]]  # code 0 by group: absent, present
    assert tables[1, 1].tolist() == [[1, 1], [0, 1]]  # code 1 where code 0 present, by group
    assert tables[1, 0].tolist() == [[0, 0], [0, 1]]
    # I(code 0; group): groups differ (2/2 vs 1/2 present)
    p = np.array([[0, 2], [1, 1]]) / 4
    pg, pc = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    cells = p > 0
    expected = float((p[cells] * np.log(p[cells] / (pg * pc)[cells])).sum())
    assert conditional_information(tables)[0] == pytest.approx(expected)


def test_groups_keep_bundles_together():
    """A tree alone links a bundle as a chain and loses its pairs; the patient group holds them."""
    codes, _ = bundled_codes(4000, seed=2)
    train, held = split_patients(codes, 0.2, seed=0)
    errors = {}
    for groups in (0, None):
        model = create("codetree", groups=groups, progress=False, seed=0).fit(train)
        synth = model.sample(train.n_patients, seed=1)
        assert np.abs(synth.prevalence() - train.prevalence()).max() <= 0.03  # every code near 9 %
        errors[groups] = co_occurrence(train, synth, top_codes=100, holdout=held)["excess_relative_rms"]
    assert errors[0] >= 0.2 and errors[None] <= 0.1, errors


def test_groups_are_off_under_dp_and_refused_when_asked():
    codes, _ = bundled_codes(600, seed=3)
    schema = Schema(columns=[], codes=CodeBlock(vocabulary=list(codes.vocabulary), binary=True, public=True))
    with pytest.raises(ConfigError, match="groups=4"):
        create("dp-codetree", epsilon=1.0, groups=4, progress=False).fit(codes, schema)
    model = create("dp-codetree", epsilon=1.0, progress=False).fit(codes, schema)
    assert model.group_variable_ is None and not model.group_parents_
    with pytest.raises(ConfigError, match="groups=-1"):
        create("codetree", groups=-1, progress=False).fit(codes)


def test_a_grouped_tree_round_trips_and_older_bundles_load(tmp_path):
    codes, _ = bundled_codes(1500, seed=4)
    model = create("codetree", progress=False, seed=0).fit(codes)
    assert model.group_variable_ is not None and len(model.group_parents_) >= 100
    model.save(tmp_path / "m")
    again = cs.load(tmp_path / "m")
    a, b = model.sample(500, seed=3), again.sample(500, seed=3)
    assert (a.matrix != b.matrix).nnz == 0
    # a bundle written before patient groups: no group keys in its config
    plain = create("codetree", groups=0, progress=False, seed=0).fit(codes)
    plain.save(tmp_path / "old")
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text())
    found = [k for k in ("group_variable", "group_parents") if _drop(config, k)]
    assert found, "the saved config should hold the group keys"
    config_path.write_text(json.dumps(config))
    old = cs.load(tmp_path / "old")
    assert old.group_variable_ is None
    assert (old.sample(300, seed=2).matrix != plain.sample(300, seed=2).matrix).nnz == 0


def _drop(config: dict, key: str) -> bool:
    """Remove ``key`` wherever it sits in a nested config; whether it was there."""
    found = False
    for k, v in list(config.items()):
        if k == key:
            del config[k]
            found = True
        elif isinstance(v, dict):
            found = _drop(v, key) or found
    return found
