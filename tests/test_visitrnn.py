"""visitrnn and dp-visitrnn: synthetic patients with their visits, and DP with the patient as the unit
(issue 21, items 2 and 3)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from clinsynth.errors import ConfigError
from clinsynth.models.registry import create, load
from clinsynth.models.visitrnn import VisitNet, public_state
from clinsynth.pipeline import guarantee_of, privacy_unit_of
from clinsynth.privacy.dpsgd import PrivateGradient, expected_batch
from clinsynth.schema import Schema
from long_visits import long_trial

UNIT = "patient (all rows of one patient)"


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, Schema]:
    df = long_trial(240, 10, seed=5)
    return df, Schema.infer(df, target="death", patient="pid", time="day")


@pytest.fixture(scope="module")
def plain(data):
    df, schema = data
    return create("visitrnn", epochs=3, progress=False).fit(df, schema)


@pytest.fixture(scope="module")
def private(data):
    df, schema = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few patients: the facts' warnings are tested elsewhere
        return create("dp-visitrnn", epsilon=2.0, epochs=2, batch_size=40, progress=False).fit(df, schema)


def check_patients(syn: pd.DataFrame, real: pd.DataFrame, schema: Schema, cap: int) -> None:
    assert list(syn.columns) == list(real.columns)
    for name in ("day", "arm", "death"):
        assert syn[name].dtype == real[name].dtype, name
    per = syn.groupby("pid", sort=False)
    for spec in schema.columns:  # per-patient columns are constant within every synthetic patient
        if spec.level == "patient":
            assert (per[spec.name].nunique(dropna=False) <= 1).all(), spec.name
    diffs = per["day"].diff().dropna()
    assert (diffs > 0).all()  # strictly increasing times
    counts = per.size()
    assert counts.max() <= cap and counts.min() >= 1 and counts.nunique() > 1  # variable visit counts
    assert not set(syn["pid"]) & set(real["pid"].astype(str))


def test_samples_are_patients_with_increasing_visits(plain, data):
    df, schema = data
    syn = plain.sample(120, seed=1)
    assert syn["pid"].nunique() == 120
    check_patients(syn, df, schema, plain.max_visits_)
    assert plain.max_visits_ == df.groupby("pid").size().max()
    assert set(syn["sex"].dropna()) <= {"F", "M"}
    assert syn["egfr"].isna().any() and syn["egfr"].notna().any()  # missing labs are drawn


def test_same_seed_same_patients_after_save_and_load(plain, tmp_path):
    first = plain.sample(60, seed=7)
    assert first.equals(plain.sample(60, seed=7)) and not first.equals(plain.sample(60, seed=8))
    again = load(plain.save(tmp_path / "bundle"))
    assert again.name == "visitrnn" and first.equals(again.sample(60, seed=7))


def test_dates_as_time_stay_strictly_increasing():
    df = long_trial(150, 6, seed=2)
    df["day"] = pd.Timestamp("2021-03-01") + pd.to_timedelta(df["day"] + 7 * (df["pid"] % 30), unit="D")
    schema = Schema.infer(df, target="death", patient="pid", time="day")
    syn = create("visitrnn", epochs=2, progress=False).fit(df, schema).sample(80, seed=0)
    assert pd.api.types.is_datetime64_any_dtype(syn["day"])
    assert (syn.groupby("pid")["day"].diff().dropna() >= pd.Timedelta(days=1)).all()


def test_a_wide_table_or_a_budget_without_dp_is_refused(data):
    df, schema = data
    with pytest.raises(ConfigError, match="long-format tables .*patient='id', time='day'"):
        create("visitrnn").fit(df, Schema.infer(df.drop(columns="pid"), target="death"))
    # a budget given to the plain name builds its DP version (privacy is given, not a different model)
    assert create("visitrnn", epsilon=1.0).name == "dp-visitrnn"


# -- differential privacy, per patient ------------------------------------------------------------
def test_privacy_is_given_like_every_other_model(data, private):
    """visitrnn is a model of the patients family given its budget: ``privacy=Privacy(…)`` on the plain
    name and ``epsilon=`` on the dp- name build the same model, which fits to the same ledger."""
    from clinsynth.models.long_base import PatientModel
    from clinsynth.privacy.budget import Privacy

    given = create("visitrnn", privacy=Privacy(epsilon=2.0), epochs=2, batch_size=40, progress=False)
    named = create("dp-visitrnn", epsilon=2.0, epochs=2, batch_size=40, progress=False)
    assert type(given) is type(named) and isinstance(given, PatientModel) and given.tags.input == "patients"
    assert given.name == named.name == "dp-visitrnn" and given.private
    assert given.get_params() == named.get_params() and given.get_params()["privacy"] == Privacy(epsilon=2.0)
    assert not create("visitrnn").private and create("visitrnn").get_params()["privacy"] is None
    df, schema = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        given.fit(df, schema)
    assert given.ledger_.state_dict() == private.ledger_.state_dict()
    assert given.sample(40, seed=2).equals(private.sample(40, seed=2))


def test_dp_ledger_is_within_budget_with_the_patient_as_unit(private, data, tmp_path):
    df, _ = data
    assert private.ledger_.spent() <= 2.0
    assert privacy_unit_of(private) == UNIT and guarantee_of(private)["privacy_unit"] == UNIT
    kinds = [c.mechanism for c in private.ledger_.charges]
    assert kinds == ["gaussian", "dp-sgd"]  # the facts from one row per patient, then DP-SGD
    n = df["pid"].nunique()
    sgd = private.ledger_.charges[1]
    assert "one sample = one patient" in sgd.purpose
    assert sgd.sample_rate == pytest.approx(expected_batch(40, n, "x") / n)  # rate over patients, not rows
    assert sgd.steps == 2 * round(n / 40)
    again = load(private.save(tmp_path / "dp"))
    assert again.ledger_.spent() == pytest.approx(private.ledger_.spent())
    assert privacy_unit_of(again) == UNIT
    check_patients(again.sample(80, seed=3), df, data[1], again.max_visits_)


def test_dp_batches_hold_whole_patients(private, data):
    df, _ = data
    from clinsynth.models.visitrnn import split_patients

    model = private
    parts = split_patients(df, model.schema_, model.max_visits_)
    model.codec_ = model.encoder_
    model._static_x = model.codec_.static.encode(parts.static)
    model._visit_x = model.codec_.visit.encode(parts.visits)
    model._lengths, model._offsets = parts.lengths, parts.offsets
    batches = list(model._batches(0))
    assert len(batches) == round(len(parts.lengths) / 40)
    sizes = [len(b) for b in batches]
    assert 0 < np.mean(sizes) < 80 and len(set(sizes)) > 1  # Poisson: about the expected 40, varying
    for patients in batches[:3]:
        s, x, target, content, _, _ = model.batch(patients)
        assert content.sum().item() == parts.lengths[patients].sum()  # every visit of each patient, no other
        for b, p in enumerate(patients[:5]):
            rows = model._visit_x[parts.offsets[p]:parts.offsets[p] + parts.lengths[p]]
            assert np.array_equal(target[b, :parts.lengths[p]].numpy(), rows)
    del model._static_x, model._visit_x


def test_per_patient_gradient_norm_covers_all_their_visits():
    # the norm DP-SGD clips is that of one patient's whole gradient: every visit through the GRU's
    # recurrence, the start state from their per-patient columns, the output head (the VAE, plain
    # MLPs, is frozen here only because its noise draws differ between a batch and one patient)
    torch.manual_seed(0)
    net = VisitNet(static_dim=5, visit_dim=4, out_dim=9, hidden=8, latent=3, private=True)
    for p in [*net.encoder.parameters(), *net.decoder.parameters()]:
        p.requires_grad_(False)
    s, x = torch.randn(4, 5), torch.randn(4, 6, 6)
    expected = []
    for i in range(4):
        net.zero_grad()
        (net(s[i:i + 1], x[i:i + 1])[2] ** 2).sum().backward()
        expected.append(torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters() if p.grad is not None)).item())
    engine = PrivateGradient(net, 1.0, 1e9, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        steps = engine.forward_private(s, x)[2]
        engine.sampled.enable_hooks()
        (steps ** 2).sum((1, 2)).sum().backward()
        engine.sampled.disable_hooks()
    assert engine.per_sample_norms().tolist() == pytest.approx(expected, rel=1e-4)
    assert min(expected) > 0


def test_dp_weights_load_into_the_fused_gru():
    torch.manual_seed(1)
    dp = VisitNet(5, 4, 9, 8, 3, private=True)
    fused = VisitNet(5, 4, 9, 8, 3)
    fused.load_state_dict(public_state(dp))
    s, x = torch.randn(3, 5), torch.randn(3, 7, 6)
    assert torch.allclose(dp.steps(s, x)[0], fused.steps(s, x)[0], atol=1e-5)
