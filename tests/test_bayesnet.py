"""bayesnet and dp-bayesnet: the sampler's exactness, structure, dropout, conditioning, the ledger, leaks."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError
from clinsynth.models.bayesnet import dependence_scores, spanning_tree_parents
from clinsynth.models.bayesnet_sampler import CompiledNetwork, TableSampler, uniform_bits
from clinsynth.schema import Schema, last_observed_visit
from test_dp_acgan import leaks, planted, quiet_accountants  # noqa: F401 (fixtures: planted; autouse: quiet_accountants)


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(n=3000, seed=5)


@pytest.fixture(scope="module")
def trial_schema(trial) -> Schema:
    return Schema.infer(trial, target="arm")


@pytest.fixture(scope="module")
def plain(trial, trial_schema):
    return clinsynth.create("bayesnet").fit(trial, trial_schema)


def test_table_sampler_gives_the_states_a_binary_search_gives():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(9, 0.3), size=6)
    probs[2] = np.eye(9)[4]            # one certain state
    probs[3] = 0.0
    probs[3, [0, 8]] = [1.0, 1e-12]    # a CDF step far below any grid cell
    config = rng.integers(0, 6, 50_000)
    u = uniform_bits(rng, (50_000,))
    assert u.dtype == np.uint32 and u.max() < 2**31 and u.max() > 2**31 * 0.999
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    expected = np.minimum([np.searchsorted(cdf[c], x / 2**31, side="right") for c, x in zip(config, u)], 8)
    np.testing.assert_array_equal(TableSampler(probs)(config, u), expected)
    # and the frequencies are the table's
    freq = np.bincount(TableSampler(probs[:1])(np.zeros(200_000, int), uniform_bits(rng, (200_000,))), minlength=9) / 200_000
    np.testing.assert_allclose(freq, probs[0], atol=0.005)


def _net(units=None):
    """Two variables: a binary root, and a numeric child (three bins, one of them an exact value,
    plus a missing state) whose table depends on the root."""
    from clinsynth.models.bayesnet import Variable
    root = Variable("y", 2, [0, 1])
    child = Variable("x", 4, [0, 0, 1, 2], lo=[0.0, 1.0, 5.0], hi=[1.0, 1.0, 9.0], missing=3)
    tables = [np.array([[0.3, 0.7]]), np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.1, 0.7, 0.1]])]
    return CompiledNetwork([root, child], [[], [0]], tables, [0, 1], 0, value_rows=["x"], code_rows=["y", "x:missing"],
                           units=units)


def test_compiled_network_draws_states_and_uniform_values_within_their_bins():
    n = 200_000
    labels = np.repeat([0, 1], [60_000, 140_000])
    values, codes = _net().sample(labels, n, np.random.default_rng(0))  # several blocks
    assert values.shape == (1, n) and codes.shape == (2, n)
    np.testing.assert_array_equal(codes[0], labels)
    x, missing = values[0], codes[1].astype(bool)
    for y, probs in ((0, [0.5, 0.2, 0.2, 0.1]), (1, [0.1, 0.1, 0.7, 0.1])):
        rows = labels == y
        state = np.select([missing[rows], x[rows] == 1.0, x[rows] < 1.0], [3, 1, 0], default=2)
        np.testing.assert_allclose(np.bincount(state, minlength=4) / rows.sum(), probs, atol=0.006)
    low, high = x[(x < 1.0) & ~missing], x[(x >= 5.0) & ~missing]
    assert low.min() >= 0.0 and high.min() >= 5.0 and high.max() < 9.0
    # within its bin a value is uniform: deciles of each bin hold a tenth each
    for sample, lo, hi in ((low, 0.0, 1.0), (high, 5.0, 9.0)):
        share = np.bincount(((sample - lo) / (hi - lo) * 10).astype(int), minlength=10) / sample.size
        np.testing.assert_allclose(share, 0.1, atol=0.01)
    assert not ((x > 1.0) & (x < 5.0)).any()


def test_compiled_network_folds_an_affine_encoding_into_column_units():
    labels = np.random.default_rng(1).integers(0, 2, 30_000)
    encoded, codes = _net().sample(labels, 30_000, np.random.default_rng(2))
    column, codes2 = _net({"x": (2.5, -1.0)}).sample(labels, 30_000, np.random.default_rng(2))
    np.testing.assert_array_equal(codes, codes2)
    np.testing.assert_allclose(column, encoded * 2.5 - 1.0, rtol=1e-12, atol=1e-12)


def _both_draws(network: CompiledNetwork, labels, n: int, seed: int):
    """(compiled loop, numpy passes) samples of one network from one seed."""
    assert network.flat is not None, "numba (the test extra) should give the compiled loop"
    fused = network.sample(labels, n, np.random.default_rng(seed))
    flat, network.flat = network.flat, None
    try:
        passes = network.sample(labels, n, np.random.default_rng(seed))
    finally:
        network.flat = flat
    return fused, passes


@pytest.mark.parametrize("target", ["arm", None])
def test_compiled_loop_draws_what_the_numpy_passes_draw(trial, trial_schema, target):
    # dropout refills, missing flags, numeric and categorical variables; several blocks, the last short
    schema = trial_schema if target else Schema.infer(trial)
    network = clinsynth.create("bayesnet").fit(trial, schema)._network
    n = 23_457
    labels = np.random.default_rng(0).integers(0, 2, n) if target else None
    (values, codes), (values_np, codes_np) = _both_draws(network, labels, n, seed=11)
    assert network.refills and values.shape[1] == n
    np.testing.assert_array_equal(values, values_np)
    np.testing.assert_array_equal(codes, codes_np)
    # and the redraws at attended visits took part (without them the draw differs)
    refills, network.refills = network.refills, []
    try:
        unrefilled, _ = network.sample(labels, n, np.random.default_rng(11))
    finally:
        network.refills = refills
    assert (unrefilled != values).any()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 255, 256, 257, 6_299, 70_001])
def test_compiled_shuffle_is_numpys_shuffle_and_leaves_the_stream_where_numpy_does(n):
    from clinsynth.models.bayesnet_kernel import compiled_kernel, shuffle
    assert compiled_kernel() is not None  # otherwise this compares numpy with itself
    for seed in range(3):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        for rng in (ours, theirs):  # a half-used 32-bit buffer: the next draw must come from it
            rng.integers(0, 2**32, size=seed)
        labels = np.repeat(np.arange(3, dtype=np.int16), [n // 3, n // 3, n - 2 * (n // 3)])
        expected = labels.copy()
        theirs.shuffle(expected)
        shuffle(ours, labels)
        np.testing.assert_array_equal(labels, expected)
        assert ours.integers(0, 2**32, size=3).tolist() == theirs.integers(0, 2**32, size=3).tolist()
        if n > 256:
            assert not np.array_equal(labels, np.sort(labels))


def test_compiled_network_refuses_labels_that_do_not_fit_it(plain):
    network, rng = plain._network, np.random.default_rng(0)
    for labels in (None, np.zeros(5, np.int16)):  # the loops would read past them (a crash, not an error)
        with pytest.raises(ValueError, match="10 target codes"):
            network.sample(labels, 10, rng)


def test_numba_can_be_switched_off(monkeypatch):
    import clinsynth.compiled
    from clinsynth.models import bayesnet_kernel
    monkeypatch.setattr(clinsynth.compiled, "_COMPILED", {})
    monkeypatch.setenv("CLINSYNTH_NUMBA", "0")
    assert bayesnet_kernel.compiled_kernel() is None
    monkeypatch.setattr(clinsynth.compiled, "_COMPILED", {})
    monkeypatch.setenv("CLINSYNTH_NUMBA", "1")
    assert bayesnet_kernel.compiled_kernel() is not None


def test_threads_drawing_from_one_model_get_their_own_work_buffers(plain):
    from concurrent.futures import ThreadPoolExecutor
    expected = [plain.sample(30_000, seed=s) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        drawn = list(pool.map(lambda s: plain.sample(30_000, seed=s), range(4)))
    for a, b in zip(expected, drawn):
        pd.testing.assert_frame_equal(a, b)


def test_sampling_is_the_same_for_a_seed_and_differs_between_seeds(plain):
    a, b, c = plain.sample(9000, seed=3), plain.sample(9000, seed=3), plain.sample(9000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_spanning_tree_follows_the_strongest_links_and_respects_forbidden_pairs():
    scores = np.array([[0, 9, 1, 1], [9, 0, 8, 1], [1, 8, 0, 7], [1, 1, 7, 0]], float)
    parents = spanning_tree_parents(scores, np.ones((4, 4), bool))
    edges = {frozenset((i, p)) for i, p in enumerate(parents) if p is not None}
    assert edges == {frozenset((0, 1)), frozenset((1, 2)), frozenset((2, 3))}
    allowed = np.ones((4, 4), bool)
    allowed[2, 3] = allowed[3, 2] = False
    parents = spanning_tree_parents(scores, allowed)
    assert parents[3] != 2 and (parents[2] != 3)


def test_dependence_score_is_zero_for_independent_columns_and_large_for_copies():
    rng = np.random.default_rng(1)
    from clinsynth.models.bayesnet import Variable

    a = rng.integers(0, 3, 20_000)
    states = np.column_stack([a, rng.integers(0, 3, 20_000), a])
    variables = [Variable(f"v{i}", 3, [0, 1, 2]) for i in range(3)]
    scores = dependence_scores(states, variables, [0, 1, 2], None)
    assert scores[0, 1] < 0.03 * 20_000          # independent: sampling noise only
    assert scores[0, 2] > 1.2 * 20_000           # a copy: 2 n (1 − 1/3) = 1.33 n


def test_heldout_gain_keeps_real_links_and_drops_what_a_small_table_cannot_estimate():
    from clinsynth.models.bayesnet import Variable, heldout_gains
    rng = np.random.default_rng(2)
    n = 3000
    y = rng.integers(0, 2, n)
    a = rng.integers(0, 8, n)
    copy = np.where(rng.random(n) < 0.9, a, rng.integers(0, 8, n))   # a noisy copy of a
    weak = np.where(rng.random(n) < 0.2, a, rng.integers(0, 8, n))   # a fifth of the time a copy
    states = np.column_stack([y, a, copy, weak, rng.integers(0, 8, n)])
    variables = [Variable("y", 2, [0, 1])] + [Variable(f"v{i}", 8, list(range(8))) for i in range(4)]
    gains = heldout_gains(states, variables, [1, 2, 3, 4], 0, smoothing=0.25)
    assert gains[0, 1] > 0.5 * n                          # ~ the mutual information of the copy, in nats
    assert gains[0, 3] < 0 and gains[2, 3] < 0            # independent: the bigger table only costs
    np.testing.assert_allclose(gains, gains.T)
    # the weak link pays on many rows, not on a few hundred
    assert gains[0, 2] > 0
    assert heldout_gains(states[:300], variables, [1, 2, 3, 4], 0, smoothing=0.25)[0, 2] < 0


def test_plain_model_keeps_dropout_missingness_and_visit_correlation(plain, trial, trial_schema):
    synth = plain.sample(6000, seed=1)
    trial_schema.validate(synth)
    groups = trial_schema.timelines()[0][1]
    real_last, syn_last = last_observed_visit(trial, groups), last_observed_visit(synth, groups)
    assert abs(real_last.mean() - syn_last.mean()) < 0.3
    # a participant is there up to the last visit and gone after it: measures that are never missing
    # while attending are observed at every visit up to it (no "after dropout" state inside)
    always = [c for g in groups for c in g.columns if trial_schema.column(c).missing == "none"]
    assert always
    for g in groups:
        cols = [c for c in g.columns if c in always]
        values = synth[cols].to_numpy(dtype=float)
        visit = np.array([g.columns.index(c) + 1 for c in cols])
        attended = visit[None, :] <= syn_last[:, None]
        assert np.isfinite(values[attended]).all() and np.isnan(values[~attended]).all()
    assert abs(trial.bmi.isna().mean() - synth.bmi.isna().mean()) < 0.01
    assert abs(trial.sbp_m06.mean() - synth.sbp_m06.mean()) < 2.0
    real_r = trial[["sbp_rz", "sbp_m01"]].corr().iloc[0, 1]
    syn_r = synth[["sbp_rz", "sbp_m01"]].corr().iloc[0, 1]
    assert real_r > 0.3 and syn_r > 0.5 * real_r
    naive = clinsynth.create("bayesnet", structure="naive").fit(trial, trial_schema).sample(6000, seed=1)
    assert abs(naive[["sbp_rz", "sbp_m01"]].corr().iloc[0, 1]) < 0.5 * syn_r


def test_conditions_reshape_the_class_mix_exactly_and_seeds_reproduce(plain, tmp_path):
    synth = plain.sample(1000, conditions={"arm": {"0": 0.5, "1": 0.5}}, seed=3)
    assert synth["arm"].astype(str).value_counts().to_dict() == {"0": 500, "1": 500}
    loaded = clinsynth.load(plain.save(tmp_path / "bn"))
    pd.testing.assert_frame_equal(loaded.sample(500, seed=9), plain.sample(500, seed=9))
    with pytest.raises(ConfigError, match="no such class"):
        plain.sample(10, conditions={"arm": {"7": 1.0}})


def test_resolved_params_record_what_the_data_decided_and_reproduce_the_fit(plain, trial, trial_schema, tmp_path):
    resolved = plain.resolved_params()
    assert plain.get_params()["bins"] is None and resolved["bins"] == plain.bins_ >= 2
    assert clinsynth.load(plain.save(tmp_path / "bn")).resolved_params() == resolved
    again = clinsynth.create("bayesnet", **resolved).fit(trial, trial_schema)
    pd.testing.assert_frame_equal(again.sample(300, seed=4), plain.sample(300, seed=4))


def test_bad_settings_are_refused_before_training(trial, trial_schema):
    for name, kwargs, match in [("bayesnet", {"structure": "star"}, "structure"),
                                ("bayesnet", {"bins": 1}, "bins"),
                                ("dp-bayesnet", {"epsilon": -1.0}, "epsilon"),
                                ("dp-bayesnet", {"theta": 0}, "theta"),
                                ("dp-bayesnet", {"structure_share": 1.5}, "structure_share")]:
        with pytest.raises(ConfigError, match=match):
            clinsynth.create(name, **kwargs).fit(trial.head(200), trial_schema)


@pytest.fixture(scope="module")
def private(planted):
    return clinsynth.create("dp-bayesnet", epsilon=2.0, accountant="rdp").fit(planted, Schema.infer(planted, target="arm"))


def test_dp_bundle_holds_no_planted_value(private, planted, tmp_path):
    assert leaks(private.save(tmp_path / "dp")) == []
    plain = clinsynth.create("bayesnet").fit(planted, Schema.infer(planted, target="arm"))
    assert leaks(plain.save(tmp_path / "plain"))  # the check can fail: the plain model keeps the category


def test_dp_ledger_matches_an_independent_accountant_and_stays_within_budget(private):
    assert private.get_params()["privacy"].delta is None
    assert private.resolved_params()["privacy"].delta == private.ledger_.delta > 0
    charges = private.ledger_.charges
    purposes = [c.purpose for c in charges]
    assert any(p.startswith("public facts") for p in purposes)
    assert any(p.startswith("network tables") for p in purposes)
    assert all(c.sample_rate == 1.0 and c.steps == 1 for c in charges)
    delta = private.ledger_.delta - sum(c.delta for c in charges)
    acc = rdp_privacy_accountant.RdpAccountant()
    for c in charges:
        acc.compose(dp_event.GaussianDpEvent(c.noise_multiplier))
    independent = acc.get_epsilon(delta)
    assert independent == pytest.approx(private.ledger_.spent(), rel=0.02)
    assert private.ledger_.spent() <= 2.0


def declared_public(schema: Schema) -> Schema:
    """Every column's bounds and categories declared domain knowledge (no public-facts charge)."""
    return schema.model_copy(update={"columns": [c.model_copy(update={"public": True}) for c in schema.columns]})


def test_dp_plan_uses_the_tree_only_when_the_data_can_pay_for_it(trial, trial_schema):
    schema = declared_public(trial_schema)
    small = clinsynth.create("dp-bayesnet", epsilon=1.0, accountant="rdp").fit(trial.head(400), schema)
    large = clinsynth.create("dp-bayesnet", epsilon=4.0, accountant="rdp").fit(trial, schema)
    assert not small.tree_ and large.tree_
    assert small.bins_ < large.bins_
    assert [c.purpose.split(":")[0] for c in small.ledger_.charges] == ["network tables"]
    assert any(c.purpose.startswith("network structure") for c in large.ledger_.charges)
    schema.validate(small.sample(500, seed=0))


def test_dp_noise_is_the_charged_one(trial, trial_schema):
    """Tables at a huge ε are the data's; at a small one they are visibly noisy."""
    trial_schema = declared_public(trial_schema)
    exact = clinsynth.create("bayesnet", structure="naive", bins=5, smoothing=0.0).fit(trial, trial_schema)
    loose = clinsynth.create("dp-bayesnet", epsilon=200.0, structure="naive", bins=5, shrinkage=0.0,
                             accountant="rdp").fit(trial, trial_schema)
    tight = clinsynth.create("dp-bayesnet", epsilon=0.3, structure="naive", bins=5, shrinkage=0.0,
                             accountant="rdp").fit(trial, trial_schema)
    v = [x.name for x in exact.variables_].index("female")
    assert np.abs(loose.tables_[v] - exact.tables_[v]).max() < 0.01
    assert np.abs(tight.tables_[v] - exact.tables_[v]).max() > 0.01


def test_values_that_pile_up_are_kept_as_states_of_their_own():
    """A lab ratio recorded as 3, 4, 5 in most rows and to two decimals in the rest (sklearn's
    diabetes s4): spread across bins, the piles were what gave the synthetic table away."""
    from clinsynth.models.bayesnet import observed_states, value_states

    rng = np.random.default_rng(3)
    piles = rng.choice([3.0, 4.0, 5.0, 6.0], 1600, p=[0.35, 0.3, 0.2, 0.15])
    spread = rng.normal(4.2, 1.0, 400).round(2).clip(2.01, 7.99)
    spread[np.isin(spread, piles)] += 0.01
    df = pd.DataFrame({"ratio": np.concatenate([piles, spread]), "y": rng.integers(0, 2, 2000)})
    lo, hi = map(np.asarray, observed_states(df["ratio"].to_numpy(), 17))
    states = value_states(lo, hi, df["ratio"].to_numpy())
    inside = np.where(lo[states] == hi[states], df["ratio"] == lo[states],
                      (df["ratio"] >= lo[states]) & (df["ratio"] <= hi[states]))
    assert inside.all() and {3.0, 4.0, 5.0, 6.0} <= set(lo[lo == hi].tolist())
    synthetic = clinsynth.create("bayesnet", seed=0, progress=False).fit(df, Schema.infer(df, target="y")).sample(20_000)
    on_pile = synthetic["ratio"].isin([3.0, 4.0, 5.0, 6.0]).mean()
    assert on_pile == pytest.approx(0.8, abs=0.03)  # without the exact states: 0.04


def test_shifted_to_totals_is_the_least_squares_point_with_those_totals():
    """The KKT conditions of the projection: one shift δ per row, cells above it kept less δ, the rest 0."""
    from clinsynth.models.bayesnet import shifted_to_totals

    rng = np.random.default_rng(4)
    x = rng.normal(5, 40, size=(200, 7))
    totals = np.maximum(x.sum(axis=1), 0.0)
    y = shifted_to_totals(x, totals)
    assert (y >= 0).all() and np.allclose(y.sum(axis=1), totals)
    for xi, yi, t in zip(x, y, totals):
        if t == 0:
            assert (yi == 0).all()
            continue
        kept = yi > 0
        delta = (xi - yi)[kept]
        assert np.allclose(delta, delta[0]) and (xi[~kept] <= delta[0] + 1e-9).all()
    assert np.array_equal(shifted_to_totals(np.array([[3.0, -1.0, 2.0]]), np.array([4.0])), [[2.5, 0.0, 1.5]])


def test_consistent_counts_keep_each_classs_state_totals_and_leave_exact_counts_alone():
    from clinsynth.models.bayesnet import consistent_counts

    exact = np.array([[3.0, 0.0], [5.0, 2.0], [1.0, 1.0], [0.0, 4.0]])
    assert consistent_counts(exact, (2, 2)) is exact  # the non-DP tables are untouched
    rng = np.random.default_rng(5)
    noisy = np.array([[200.0, 4.0]] * 8) + rng.normal(0, 60, (8, 2))  # 2 classes × 4 parent states
    assert np.array_equal(consistent_counts(noisy, (8,)), np.clip(noisy, 0, None))  # one parent: clipped
    x = consistent_counts(noisy, (2, 4))
    assert (x >= 0).all()
    per_class = noisy.reshape(2, 4, 2).sum(axis=1)
    assert np.allclose(x.reshape(2, 4, 2).sum(axis=1), np.clip(per_class, 0, None))  # each class's, clipped once
    assert not np.allclose(x, np.clip(noisy, 0, None))


def test_a_rare_state_in_sparse_contexts_is_not_inflated_by_the_noise():
    """A 2 % flag under 2 classes × 4 parent states of 225 records each, noise sd 60 (a 120-column
    table of 1,800 records at ε = 1): clipping each noisy cell at 0 released it at ≈ 9 % (0.4 sd
    per context); keeping each class's total, at ≈ 6 % — what clipping that total once leaves."""
    from clinsynth.models.bayesnet import normalise

    rng = np.random.default_rng(6)
    true = np.array([[220.5, 4.5]] * 8)
    sigma = 60.0
    released, clipped = [], []
    for _ in range(300):
        noisy = true + rng.normal(0, sigma, true.shape)
        per_class = np.clip(noisy.reshape(2, 4, 2).sum(axis=1), 0, None) + 1e-9  # as BayesNet._backoff
        backoff = np.repeat(per_class / per_class.sum(axis=1, keepdims=True), 4, axis=0)
        released.append(normalise(noisy, backoff, sigma, (2, 4))[:, 1].mean())
        old = np.clip(noisy, 0, None) + sigma * backoff
        clipped.append((old[:, 1] / old.sum(axis=1)).mean())
    assert np.mean(clipped) > 0.08
    assert np.mean(released) < 0.065
