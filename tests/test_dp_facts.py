"""DP public facts on ordinary tables (issue 22, point 2).

Ordinary tables used to be refused under ``--epsilon``: "too few records for a DP estimate of
column(s) …" for skewed lab counts, digits or the trial at ~1,500 rows. Now the facts degrade —
a coarser grid, a larger share of the budget for few records per column, a public default, rare
categories merged with a warning — and the release is refused only when nothing useful can be
released, naming the smallest ε that works. Every figure stays inside the ledger's ε.
"""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr, ndtri

import clinsynth
from clinsynth.cli import main
from clinsynth.errors import ReleaseWarning
from clinsynth.privacy.facts_budget import MAX_SHARE, facts_noise, smallest_epsilon
from clinsynth.privacy.histograms import (
    PUBLIC_NUMBER_RANGE,
    bucket,
    composite_state,
    grid_edges,
    group_starts,
    levels,
    locate,
    widen,
    zero_spike,
)
from clinsynth.privacy.ledger import PrivacyLedger
from clinsynth.privacy.conform import conform
from clinsynth.privacy.statistics import (
    RARE_LABEL,
    FactsRefusal,
    charged_release,
    facts_limits,
    plan_statistics,
    release_statistics,
)
from clinsynth.schema import ColumnSpec, Schema

SMALLEST = re.compile(r"the smallest ε that would work is ([0-9.]+)")


@pytest.fixture(autouse=True)
def quiet_accountants():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("default", category=ReleaseWarning)
        yield


def skewed_counts(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Five lab counts with long tails (negative binomial, means 1.5 … 60), age, sex and a binary outcome."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "sex": rng.choice(["F", "M"], n),
                       "bmi": np.round(rng.normal(28, 5, n), 1)})
    for i, (mean, r) in enumerate([(3, 0.5), (8, 1.0), (20, 0.7), (1.5, 0.3), (60, 2.0)]):
        df[f"lab{i}"] = rng.negative_binomial(r, r / (r + mean), n)
    df["y"] = (rng.random(n) < 0.3).astype(int)
    return df


def _ledger(release_dir) -> PrivacyLedger:
    config = json.loads((release_dir / "share" / "model" / "config.json").read_text())
    return PrivacyLedger.from_state_dict(config["fitted"]["ledger"])


def _run(args: list[str], capsys) -> tuple[int, str]:
    code = main(["run", *args, "--quiet", "--evaluate", "none"])
    out, err = capsys.readouterr()
    return code, " ".join((out + err).split())


# --- the brief's tables run ---------------------------------------------------------------------

DEFAULT_AND_ACGAN = pytest.mark.parametrize("model", [[], ["--model", "acgan", "--epochs", "2", "--select", "last"]],
                                            ids=["auto", "acgan"])


@DEFAULT_AND_ACGAN
def test_skewed_counts_without_declared_bounds_run_at_epsilon_1_within_budget(tmp_path, capsys, model):
    df = skewed_counts(600)
    df.to_csv(tmp_path / "labs.csv", index=False)
    code, text = _run([str(tmp_path / "labs.csv"), "--target", "y", "--epsilon", "1", *model,
                       "--out", str(tmp_path / "r")], capsys)
    assert code == 0, text
    ledger = _ledger(tmp_path / "r")
    assert ledger.spent() <= 1.0 and ledger.charges[0].purpose.startswith("public facts")
    model = clinsynth.load(tmp_path / "r" / "share" / "model")
    for i in range(5):  # every count column was estimated (no refusal), non-negative, covering most values
        lo, hi = model.schema_.column(f"lab{i}").bounds
        x = df[f"lab{i}"]
        assert lo == 0 and ((x >= lo) & (x <= hi)).mean() >= 0.9, (i, lo, hi)
    record = {q["columns"][0]: q for q in model.facts_["queries"] if q["facts"] == "bounds and scaling"}
    assert {q["outcome"] for q in record.values()} <= {"fine grid", "coarser grid"}
    page = (tmp_path / "r" / "share" / "guarantee.html").read_text()
    assert "How the public facts were estimated" in page and "lab4" in page
    synthetic = pd.read_csv(tmp_path / "r" / "share" / "synthetic.csv")
    assert len(synthetic) == 480 and (synthetic[[f"lab{i}" for i in range(5)]] >= 0).all().all()


@pytest.mark.parametrize("model, params", [("dp-bayesnet", {}), ("dp-vae", {"epochs": 1})])
def test_other_dp_models_release_the_same_facts_within_budget(model, params):
    df = skewed_counts(600)
    fitted = clinsynth.create(model, epsilon=1.0, progress=False, **params).fit(df, Schema.infer(df, target="y"))
    assert fitted.ledger_.spent() <= 1.0
    assert {c for q in fitted.facts_["queries"] for c in q["columns"]} >= {f"lab{i}" for i in range(5)}
    fitted.schema_.validate(fitted.sample(300, seed=0))


@DEFAULT_AND_ACGAN
def test_digits_at_epsilon_1_runs_with_a_larger_share_for_few_records_per_column(tmp_path, capsys, model):
    from sklearn.datasets import load_digits

    load_digits(as_frame=True).frame.to_csv(tmp_path / "digits.csv", index=False)
    code, text = _run([str(tmp_path / "digits.csv"), "--target", "target", "--epsilon", "1", *model,
                       "--out", str(tmp_path / "r")], capsys)
    assert code == 0, text
    ledger = _ledger(tmp_path / "r")
    assert ledger.spent() <= 1.0
    assert "raised from 10%" in ledger.charges[0].purpose  # 1,437 records for 64 pixel columns
    model = clinsynth.load(tmp_path / "r" / "share" / "model")
    assert model.schema_.column("target").categories == list(range(10))
    assert model.facts_["budget"]["share"] > 0.1


def test_the_simulated_trial_at_1500_rows_runs_at_epsilon_1():
    from clinsynth.data.datasets import simulate_trial

    df = simulate_trial(n=1500, seed=0)
    ledger = PrivacyLedger.for_records(1.0, None, len(df))
    release = charged_release(df, Schema.infer(df, target="arm"), ledger, 0.1, np.random.default_rng(0))
    assert ledger.spent() <= 1.0
    for name in ("egfr", "total_cholesterol", "sbp_rz"):  # the columns the old release refused
        lo, hi = release.schema.column(name).bounds
        x = df[name].dropna()
        assert ((x >= lo) & (x <= hi)).mean() >= 0.9, name


# --- refusal only when nothing useful can be released ---------------------------------------------

def _tiny(n: int = 50, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(45, 80, n), "lab": np.round(rng.normal(5.0, 0.8, n), 1),
                         "y": np.array(["no", "yes"] * (n // 2))})


@DEFAULT_AND_ACGAN
def test_epsilon_0_01_on_50_rows_is_refused_naming_the_smallest_epsilon_that_then_runs(tmp_path, capsys, model):
    _tiny().to_csv(tmp_path / "tiny.csv", index=False)
    code, text = _run([str(tmp_path / "tiny.csv"), "--target", "y", "--epsilon", "0.01", *model,
                       "--out", str(tmp_path / "refused")], capsys)
    assert code == 1
    assert "too few records (40)" in text and "ε = 0.01 here" in text
    smallest = float(SMALLEST.search(text).group(1))
    assert 0.5 < smallest < 50
    code, text = _run([str(tmp_path / "tiny.csv"), "--target", "y", "--epsilon", str(smallest), *model,
                       "--out", str(tmp_path / "r")], capsys)
    assert code == 0, text
    assert _ledger(tmp_path / "r").spent() <= smallest


def test_the_smallest_epsilon_is_the_rule_inverted_and_rounded_up():
    df = _tiny()
    schema = Schema.infer(df, target="y")
    ledger = PrivacyLedger.for_records(0.01, None, len(df))
    with pytest.raises(FactsRefusal) as refusal:
        charged_release(df, schema, ledger, 0.1, np.random.default_rng(0))
    assert ledger.charges == []  # refused from public facts (n, ε, the plan) before anything is charged or read
    needed = refusal.value.needed_noise_std
    smallest = float(SMALLEST.search(str(refusal.value)).group(1))
    plan = plan_statistics(schema)
    # the share rule's bar, as charged_release computes it: a third of the records in one bucket or class
    comfort = min(facts_limits(plan, schema, len(df), ledger.delta / 10, 3.0).values())
    at = facts_noise(plan.sensitivity, comfort, smallest, ledger.delta, 0.1)
    below = facts_noise(plan.sensitivity, comfort, smallest - 0.1 * 10 ** np.floor(np.log10(smallest)),
                        ledger.delta, 0.1)
    assert at.noise_std <= needed < below.noise_std  # two-digit rounding, upward
    assert at.share == MAX_SHARE  # 50 records: the facts get the most they may
    assert smallest_epsilon(plan.sensitivity, comfort, needed, ledger.delta, 0.1) == smallest


def test_a_target_whose_classes_cannot_be_released_is_refused_with_an_epsilon_from_the_noisy_counts():
    rng = np.random.default_rng(1)
    n = 1500
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "y": np.where(rng.random(n) < 0.01, "event", "none")})
    ledger = PrivacyLedger.for_records(1.0, None, n)
    with pytest.raises(FactsRefusal, match=r"only one category \('none'\) of the target 'y'.*smallest ε that would work is"):
        charged_release(df, Schema.infer(df, target="y"), ledger, 0.1, np.random.default_rng(0))


def test_a_three_class_target_refused_from_its_counts_names_an_epsilon_above_the_one_that_failed():
    """sklearn's iris (120 training rows, 3 × 40): the plan names ε = 1.6 "for a target of two even
    classes"; at 1.6 one class was released and the refusal named 1.3 — below the ε that had failed."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({f"x{i}": np.round(rng.normal(5.0, 1.0, 120), 1) for i in range(4)} | {"y": np.repeat(["a", "b", "c"], 40)})
    schema = Schema.infer(df, target="y")
    with pytest.raises(FactsRefusal, match=r"smallest ε that would work is [0-9.]+ for a target of two even classes"):
        charged_release(df, schema, PrivacyLedger.for_records(1.0, None, 120), 0.1, np.random.default_rng(0))
    named = []
    for seed in range(6):
        try:
            charged_release(df, schema, PrivacyLedger.for_records(1.6, None, 120), 0.1, np.random.default_rng(seed))
        except FactsRefusal as refusal:
            named.append(float(SMALLEST.search(str(refusal)).group(1)))
    assert named and min(named) > 1.6
    for seed in range(3):  # and the ε named then releases the facts
        charged_release(df, schema, PrivacyLedger.for_records(max(named), None, 120), 0.1, np.random.default_rng(seed))


# --- rare categories and public defaults -----------------------------------------------------

def test_a_rare_binary_category_is_merged_with_a_warning_not_refused():
    rng = np.random.default_rng(2)
    n = 1500
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "flag": np.where(rng.random(n) < 0.03, "yes", "no"),
                       "y": rng.integers(0, 2, n)})
    assert Schema.infer(df).column("flag").kind == "binary"
    with pytest.warns(ReleaseWarning, match=r"column 'flag': only 'no' is common enough"):
        model = clinsynth.create("dp-bayesnet", epsilon=1.0, progress=False).fit(df, Schema.infer(df, target="y"))
    assert model.schema_.column("flag").categories == ["no"]
    assert [q["outcome"] for q in model.facts_["queries"] if q["columns"] == ["flag"]] == ["one category"]
    synthetic = model.sample(500, seed=0)
    model.schema_.validate(synthetic)
    assert set(synthetic["flag"]) == {"no"}
    from clinsynth.pipeline import guarantee_of

    assert "one category released, rarer values merged, for flag" in guarantee_of(model)["schema_facts"]["summary"]


def test_a_text_column_with_no_common_value_is_suppressed_and_conformed():
    rng = np.random.default_rng(3)
    n = 1500
    df = pd.DataFrame({"age": rng.integers(18, 90, n), "site": [f"site-{i}" for i in rng.integers(0, 300, n)],
                       "y": rng.integers(0, 2, n)})
    with pytest.warns(ReleaseWarning, match="no value is common enough"):
        release = release_statistics(df, Schema.infer(df, target="y"), 20.0, 1e-6, np.random.default_rng(0))
    assert release.schema.column("site").categories == [RARE_LABEL]
    out = conform(df, release)
    assert set(out["site"]) == {RARE_LABEL}
    release.schema.validate(out)


def test_values_that_cannot_be_located_get_the_public_default_with_a_warning():
    rng = np.random.default_rng(4)
    n = 600
    # log-uniform over 12 decades: no bucket of any grid holds enough of them to clear noise of sd 20
    df = pd.DataFrame({"spread": 10.0 ** rng.uniform(-3, 9, n), "age": rng.integers(18, 90, n)})
    with pytest.warns(ReleaseWarning, match=r"spread: no value could be located"):
        release = release_statistics(df, Schema.infer(df), 20.0, 1e-6, np.random.default_rng(0))
    assert release.schema.column("spread").bounds == PUBLIC_NUMBER_RANGE
    assert {q["outcome"] for q in release.facts if q["columns"] == ["spread"] and q["facts"].startswith("bounds")} \
        == {"public default"}
    assert release.schema.column("age").bounds[1] < 1000  # the other column is located as usual


def test_the_target_is_weighted_up_on_a_wide_table():
    d = pd.DataFrame({f"x{i}": np.arange(100) % (i + 7) for i in range(40)} | {"y": ["a", "b"] * 50})
    plan = plan_statistics(Schema.infer(d, target="y"))
    rest = 40 + 40 * 0.25
    assert plan.target_weight == pytest.approx(np.sqrt(rest / 9))
    assert plan.sensitivity ** 2 == pytest.approx(rest / 0.9)  # the target takes a tenth of the facts' μ²
    assert plan_statistics(Schema.infer(d[["x0", "y"]], target="y")).target_weight == 1.0


# --- locating values: the composite, by hand --------------------------------------------------

def _fine_counts(values: dict[float, float]) -> np.ndarray:
    """Exact fine-grid counts with ``count`` records at each value."""
    edges = grid_edges("number")
    counts = np.zeros(edges.size - 1)
    for x, count in values.items():
        counts[bucket(edges, np.array([x]))[0]] += count
    return counts


def _coarse_from(fine: np.ndarray) -> np.ndarray:
    starts = group_starts(grid_edges("number").size, 300, 16)
    return np.add.reduceat(fine, starts[:-1])


def test_a_zero_spike_below_the_search_cut_joins_the_located_range():
    fine = _fine_counts({0.0: 100, 2.0: 500, 3.0: 500, 4.0: 500, 5.0: 500})
    found = levels("number", fine, 20.0, _coarse_from(fine), 1e6)  # the coarse grid sees nothing
    assert fine[300] < found[0].cut[300]  # 100 records at 0 do not clear the cut for searching 600 buckets …
    comp = locate(found, zero_spike("number", fine, 20.0))  # … but 0 is a public location: 4.5 sds
    assert comp.edges[0] == 0.0 and comp.mass[0] == 100 and "the bucket at 0" in comp.extended_by
    assert locate(found).edges[0] > 1.0  # without it the range starts at 2
    state = composite_state(comp, 0.0, 6.0)
    top_of_zero = grid_edges("number")[301]
    assert ndtr(np.interp(top_of_zero, state["knots"], state["scores"])) == pytest.approx(100 / 2100, abs=1e-6)


def test_a_thin_tail_seen_only_by_the_coarse_grid_extends_the_range_and_the_bounds():
    body = {float(v): 400.0 for v in range(2, 8)}
    tail = {float(v): 30.0 for v in np.unique(np.round(np.geomspace(9, 30, 12)))}  # 30 each: under any fine cut
    fine = _fine_counts(body | tail)
    found = levels("number", fine, 20.0, _coarse_from(fine), 25.0)
    comp = locate(found)
    assert comp.base == "11%" and comp.extended_by == ("×4.95",)
    assert comp.edges[-1] == pytest.approx(36.565, abs=1e-3)  # the coarse bucket's top: 30 is inside
    lo, hi = widen(*comp.base_range, ColumnSpec(name="lab", kind="integer"), (comp.edges[0], comp.edges[-1]))
    assert lo == 0 and 36 <= hi < 40  # the extension's edge, not half the extended width again


def test_mass_the_format_count_says_was_missed_is_found_next_to_the_range_and_trimmed():
    """A count column: 850 cells at 0, 40 at each of 1 … 16 — under every cut but the zero bucket's."""
    fine = _fine_counts({0.0: 850.0} | {float(v): 40.0 for v in range(1, 17)})
    found = levels("number", fine, 64.0, _coarse_from(fine), 85.0)
    spike = zero_spike("number", fine, 64.0)
    alone = locate(found, spike)
    assert alone.edges[-1] < 1e-3  # the zeros alone: released as bounds [0, 1], every value above 1 clipped
    comp = locate(found, spike, observed=(850.0 + 640.0, 102.0))  # the format histogram's observed cells
    assert any(name.startswith("×602 next to it") for name in comp.extended_by)
    # the ×602 bucket [0.3, 181) joined, its empty outer coarse bucket [36.6, 181) trimmed
    assert comp.edges[-1] == pytest.approx(36.565, abs=1e-3) and comp.counts.sum() == pytest.approx(1490.0)
    lo, hi = widen(*comp.base_range, ColumnSpec(name="n", kind="integer"), (comp.edges[0], comp.edges[-1]))
    assert (lo, hi) == (0.0, 37.0)
    assert locate(found, spike, observed=(850.0, 102.0)).edges[-1] < 1e-3  # nothing missed: nothing joins


def test_missed_mass_is_searched_next_to_the_range_not_in_a_far_noisy_bucket():
    body = {float(v): 70.0 for v in range(10, 30)}              # 1,400 in the coarse bucket [7.38, 36.6)
    missed = {float(v): 50.0 for v in range(2, 8)}              # 300 in [1.49, 7.38): 3.5 sds, under its cut
    far = {float(v): 15.2 for v in np.geomspace(5e3, 2e4, 25)}  # 380 in [4437, 21970): 4.5 sds, as far noise can be
    fine = _fine_counts(body | missed | far)
    found = levels("number", fine, 64.0, _coarse_from(fine), 85.0)
    assert locate(found).edges[0] > 7  # without the format count the lower values are not located
    comp = locate(found, observed=(2080.0, 50.0))
    assert comp.extended_by == ("×4.95 next to it (the observed count held more)",)
    assert comp.edges[0] == pytest.approx(1.4905, abs=1e-3) and comp.edges[-1] == pytest.approx(36.565, abs=1e-3)


def test_an_end_segment_of_the_coarsest_level_sheds_its_empty_coarse_buckets():
    fine = _fine_counts({float(v): 60.0 for v in range(2, 17)})  # 900 spread over 2 … 16
    found = levels("number", fine, 64.0, _coarse_from(fine), 85.0)
    comp = locate(found)
    assert comp.base == "×602"  # only the coarsest level holds it all: [0.3, 181)
    assert comp.edges[0] == pytest.approx(1.4905, abs=1e-3) and comp.edges[-1] == pytest.approx(36.565, abs=1e-3)
    lo, hi = widen(*comp.base_range, ColumnSpec(name="n", kind="integer"), (comp.edges[0], comp.edges[-1]))
    assert lo == 0 and hi <= 55  # untrimmed: [0, 272] for values up to 16


def test_a_zero_inflated_count_keeps_its_values_at_a_digits_like_noise():
    """60 % zeros, the rest 1 … 16, 1,800 rows, noise sd 51 per value count (sklearn's digits at ε = 1):
    released with bounds [0, 1] in 9 of these 20 draws before the format count was used, 0 now."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"n": np.where(rng.random(1800) < 0.6, 0, rng.integers(1, 17, 1800)), "y": rng.integers(0, 2, 1800)})
    schema = Schema.infer(df, target="y")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReleaseWarning)
        tops = [release_statistics(df, schema, 51.0, 1e-5, np.random.default_rng(seed)).schema.column("n").bounds[1]
                for seed in range(20)]
    assert sum(top < 16 for top in tops) <= 1 and sum(top > 100 for top in tops) <= 4


def test_a_coarse_bucket_past_both_ends_does_not_extend_either():
    fine = _fine_counts({100.0: 900, 110.0: 900, 121.0: 900, 50.0: 150, 170.0: 150})
    found = levels("number", fine, 40.0, _coarse_from(fine), 10.0)
    assert fine[bucket(grid_edges("number"), np.array([50.0]))[0]] < found[0].cut[0]  # stragglers: not bulk
    comp = locate(found)
    # [36.6, 181) holds the body and 300 stragglers (> 3 sds) on both sides: which side is unknown
    assert comp.extended_by == () and comp.edges[0] > 90 and comp.edges[-1] < 140


def test_what_the_range_holds_is_counted_as_drawn_not_as_thresholded():
    # 2 and 7 clear the fine cut, 3 … 6 (90 each) do not: inside the range their mass is set to 0,
    # but the coarse bucket [1.49, 7.38) that holds them all has nothing more to add below 2
    fine = _fine_counts({2.0: 800, 3.0: 90, 4.0: 90, 5.0: 90, 6.0: 90, 7.0: 800})
    found = levels("number", fine, 20.0, _coarse_from(fine), 25.0)
    assert fine[bucket(grid_edges("number"), np.array([4.0]))[0]] < found[0].cut[0]
    comp = locate(found)
    edges = grid_edges("number")
    assert comp.extended_by == () and comp.edges[0] == edges[bucket(edges, np.array([2.0]))[0]]  # 2's own bucket


def test_a_tail_holding_most_cells_is_never_negligible_however_noisy():
    """600 cells, 250 whole and 350 with one decimal, format noise sd 37.7 (a 480-row table at
    ε = 1): 350 is within 4 sds of a 7-class tail's sum, but it is 58 % of the values — rounding
    them to integers would be no "precision", it would destroy the column."""
    from clinsynth.privacy.formats import NUMBER_FORMATS, decide_format

    counts = np.zeros(len(NUMBER_FORMATS))
    counts[NUMBER_FORMATS.index("whole")], counts[NUMBER_FORMATS.index("1 decimal")] = 250, 350
    facts = decide_format(counts, 37.7, dates=False, may_be_flag=True)
    assert (facts["kind"], facts["decimals"]) == ("continuous", 1)


# --- the code models' DP vocabulary --------------------------------------------------------------

def test_a_vocabulary_refused_at_a_tiny_epsilon_names_one_that_releases_it():
    from clinsynth.data.datasets import simulate_ehr

    codes, _ = simulate_ehr(300, 40, seed=5)
    with pytest.raises(clinsynth.InputError, match=r"no code's noisy patient count clears") as refused:
        clinsynth.create("dp-vae", epsilon=0.05, epochs=1, progress=False).fit(codes)
    smallest = float(SMALLEST.search(str(refused.value)).group(1))
    assert "(ε = 0.05 here;" in str(refused.value) and 0.05 < smallest < 100
    model = clinsynth.create("dp-vae", epsilon=smallest, epochs=1, progress=False).fit(codes)
    assert len(model.schema_.codes.vocabulary) >= 1 and model.ledger_.spent() <= smallest


def test_unimodal_fit_is_the_hand_computed_least_squares_fit():
    from clinsynth.privacy.histograms import unimodal_fit

    # rise to 3 then fall: the dip 2 → 1 is pooled (1.5, 1.5); any other turning point costs more
    np.testing.assert_allclose(unimodal_fit(np.array([0.0, 2, 1, 3, 0])), [0, 1.5, 1.5, 3, 0])
    hump = np.array([1.0, 4, 9, 7, 2, 0])
    np.testing.assert_allclose(unimodal_fit(hump), hump)  # already unimodal: unchanged
    np.testing.assert_allclose(unimodal_fit(np.array([5.0, -1, 2, -2])), [5, 0.5, 0.5, -2])


def test_a_coarse_bucket_and_the_margins_are_shaped_by_the_fine_counts():
    """Ages around 50 located only by the coarse grid ([36.6, 181)), the 13 % below 36.6 too few
    for its bucket: spread evenly in t, half the mass lay above 80 and none below 36.6; shaped by
    the (noisy) fine counts it stays where the ages are, and the margin below gets its share."""
    rng = np.random.default_rng(4)
    ages = np.round(rng.normal(50, 13, 700)).clip(19, 79)
    fine_sd = 24.0
    fine = _fine_counts(dict(zip(*np.unique(ages, return_counts=True)))) + rng.normal(0, fine_sd, 600)
    coarse = _coarse_from(_fine_counts(dict(zip(*np.unique(ages, return_counts=True))))) + rng.normal(0, 32, 38)
    found = levels("number", fine, 1e6, coarse, 32.0)  # the fine grid alone locates nothing here
    comp = locate(found)
    assert comp.base == "×4.95" and comp.edges[0] == pytest.approx(36.565, abs=1e-3)
    spec = ColumnSpec(name="age", kind="integer")
    lo, hi = widen(*comp.base_range, spec, (comp.edges[0], comp.edges[-1]))

    def quantile(state, p):
        return float(np.interp(ndtri(p), state["scores"], state["knots"]))

    even = composite_state(comp, lo, hi)
    shaped = composite_state(comp, lo, hi, fine_counts=fine)
    assert quantile(even, 0.9) > 120 and quantile(even, 0.05) > 36  # the old spread
    assert quantile(shaped, 0.9) < 90 and quantile(shaped, 0.05) < 30  # real: 67 and 29
    assert quantile(shaped, 0.5) == pytest.approx(np.median(ages), abs=8)


def test_unimodal_fit_is_the_best_of_every_turning_point():
    """The one-pass costs pick the turning point a brute-force search over all of them picks."""
    from sklearn.isotonic import isotonic_regression

    from clinsynth.privacy.histograms import unimodal_fit

    rng = np.random.default_rng(5)
    for _ in range(50):
        k = int(rng.integers(1, 40))
        y = rng.normal(0, 1, k) + 3 * np.exp(-(((np.arange(k) - k / 2) / 4) ** 2))
        fits = [np.concatenate([isotonic_regression(y[:m], increasing=True) if m else y[:0],
                                isotonic_regression(y[m:], increasing=False) if m < y.size else y[:0]])
                for m in range(y.size + 1)]
        best = min(float(np.sum((f - y) ** 2)) for f in fits)
        assert float(np.sum((unimodal_fit(y) - y) ** 2)) == pytest.approx(best, abs=1e-9)
