"""The AC-GAN's visit options (issue 22, the trial's detection AUROC): the generator emits visit
series as first value + changes, the critic reads the changes, and it sees fakes as decoded."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import clinsynth
from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError
from clinsynth.schema import Schema

FAST = {"epochs": 1, "batch_size": 128, "progress": False, "snapshots": "off", "seed": 3}


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(n=400, seed=5)


@pytest.fixture(scope="module")
def fitted(trial):
    return clinsynth.create("acgan", **FAST).fit(trial, Schema.infer(trial, target="arm"))


def _grid_cells(model, row: int) -> np.ndarray:
    """Generated-output positions of one grid channel, visit by visit."""
    return model.grid_[model.value_channels_[row]]


def test_visit_steps_sum_the_value_channels_along_the_visits(fitted):
    G = fitted.generator_.eval()
    z, y = torch.randn(64, fitted.noise_dim), torch.randint(0, fitted.n_classes_, (64,))
    c = torch.nn.functional.one_hot(torch.randint(0, fitted.n_conditions_, (64,)), fitted.n_conditions_).float()
    with torch.no_grad():
        stepped = G(z, y, c)
        steps = G.steps.clone()
        G.steps.zero_()
        plain = G(z, y, c)
        G.steps.copy_(steps)
    assert len(fitted.value_channels_) == 3  # sbp, dbp, meds
    for row in range(3):
        cells = _grid_cells(fitted, row)
        assert torch.allclose(stepped[:, cells], plain[:, cells].cumsum(1), atol=1e-5)
    others = np.setdiff1d(np.arange(stepped.shape[1]), fitted.grid_[fitted.value_channels_].ravel())
    assert torch.equal(stepped[:, others], plain[:, others])  # missing flags and baseline columns as they were
    with torch.no_grad():  # the fast sampler folds the sums into its matrices
        assert torch.allclose(G.folded()(z, y, c.argmax(1)), stepped, atol=1e-4)


def test_critic_reads_the_change_from_visit_to_visit(fitted, trial):
    D = fitted.discriminator_
    pairs = fitted.critic_change_pairs_
    assert pairs.shape == (2, 3 * 11)  # three measures, 12 visits each
    assert D.net[0].in_features == fitted.critic_idx_.size + 33
    names = {s.start: s.name for s in fitted.encoder_.spans}
    first = [names[int(fitted.critic_idx_[i])] for i in pairs[:, 0]]
    assert first == ["sbp_rz", "sbp_m01"]
    x = torch.randn(5, fitted.critic_idx_.size)
    with torch.no_grad():
        expected = D.net(torch.cat([x, x[:, pairs[1]] - x[:, pairs[0]]], dim=1))
        assert torch.allclose(D(x), expected)


def test_decoded_view_leaves_real_records_alone_and_blanks_fakes_as_decoding_does(fitted, trial):
    X = torch.as_tensor(fitted.encoder_.encode(fitted._conform(trial)))
    generated, (a, b) = X[:, fitted.generated_idx_], fitted.condition_slice_
    fitted._view = None
    assert torch.equal(fitted._as_decoded(generated, X[:, a:b]), generated)  # real records are already so
    # a fake whose every cell is "observed" with value 1, for a participant who left after visit 4
    fake = torch.ones(1, generated.shape[1])
    flagged_obs, flagged_miss = fitted.view_flagged_[1], fitted.view_flagged_[2]
    fake[:, flagged_obs], fake[:, flagged_miss] = 1.0, 0.0
    last = torch.nn.functional.one_hot(torch.tensor([4]), fitted.n_conditions_).float()
    seen = fitted._as_decoded(fake, last)[0]
    sbp = _grid_cells(fitted, 0)
    assert seen[sbp[:4]].tolist() == [1.0] * 4 and seen[sbp[4:]].tolist() == [0.0] * 8
    meds_flags = fitted.grid_[fitted.value_channels_[2] + 1]  # the observed flag of each meds visit
    assert seen[meds_flags[1:4]].tolist() == [1.0] * 3 and seen[meds_flags[4:]].tolist() == [0.0] * 8
    # a cell flagged missing (by half) shows half its value
    fake[:, flagged_obs], fake[:, flagged_miss] = 0.5, 0.5
    seen = fitted._as_decoded(fake, last)[0]
    assert seen[sbp[1]].item() == 0.5 and seen[sbp[0]].item() == 1.0  # sbp_rz has no missing flag


def test_bundle_saved_before_the_visit_options_loads_as_it_was_trained(trial, tmp_path):
    schema = Schema.infer(trial, target="arm")
    plain = clinsynth.create("acgan", visit_steps=False, critic_changes=False, **FAST).fit(trial, schema)
    path = plain.save(tmp_path / "bundle")
    config = json.loads((path / "config.json").read_text())
    for key in ("visit_steps", "critic_changes", "decoded_view"):  # what an older clinsynth wrote
        config["params"].pop(key)
        config["fitted"].pop(key, None)
    (path / "config.json").write_text(json.dumps(config))
    loaded = clinsynth.load(path)
    assert loaded.visit_steps is True and not loaded.generator_.steps.any()
    pd.testing.assert_frame_equal(loaded.sample(200, seed=1), plain.sample(200, seed=1))


def test_dp_acgan_keeps_its_measured_path_and_options_are_checked(trial):
    params = clinsynth.create("dp-acgan", epsilon=1.0).get_params()
    assert (params["visit_steps"], params["critic_changes"], params["decoded_view"]) == (False, False, False)
    with pytest.raises(ConfigError, match="visit_steps='yes'"):
        clinsynth.create("acgan", visit_steps="yes", **FAST).fit(trial, Schema.infer(trial, target="arm"))


def _last_visit(frame: pd.DataFrame, groups) -> np.ndarray:
    seen = np.zeros((len(frame), len(groups[0].columns)), dtype=bool)
    for g in groups:
        seen |= frame[g.columns].notna().to_numpy()
    return np.where(seen.any(1), seen.shape[1] - np.argmax(seen[:, ::-1], axis=1), 0)  # 1-based, 0: none


def test_missed_visits_are_drawn_at_the_real_rate_and_blanked_whole(fitted, trial):
    """A GAN drops rare events: the trial's generator missed 0.3-0.5 % of the visits before a
    participant's last against 3 % real (issue 22), so missed visits are drawn from their rates."""
    groups = fitted.encoder_.timelines[0].groups
    last = _last_visit(trial, groups)
    expected = []
    for j in range(len(groups[0].columns)):
        missed = trial[[g.columns[j] for g in groups]].isna().all(axis=1).to_numpy()
        later = last - 1 > j
        expected.append((missed & later).sum() / later.sum() if later.any() else 0.0)
    assert 0.01 < max(expected) and np.allclose(fitted.missed_rates_, expected)
    rates = fitted.missed_rates_.copy()
    try:  # every participant who came back after visit 3 missed it; nobody missed another
        fitted.missed_rates_ = np.where(np.arange(rates.size) == 3, 1.0, 0.0)
        synth = fitted.sample(400, seed=5)
    finally:
        fitted.missed_rates_ = rates
    back_later = _last_visit(synth, groups) - 1 > 3
    at_3 = synth[[g.columns[3] for g in groups]]
    assert back_later.sum() > 100 and at_3[back_later].isna().all(axis=None)
    with pytest.raises(ConfigError, match="missed_visits=True"):
        clinsynth.create("dp-acgan", epsilon=1.0, missed_visits=True, **FAST).fit(trial, Schema.infer(trial, target="arm"))
    assert clinsynth.create("dp-acgan", epsilon=1.0).get_params()["missed_visits"] is False


def test_missed_visit_rates_survive_a_bundle_and_older_bundles_have_none(fitted, tmp_path):
    loaded = clinsynth.load(fitted.save(tmp_path / "now"))
    assert np.array_equal(loaded.missed_rates_, fitted.missed_rates_)
    pd.testing.assert_frame_equal(loaded.sample(200, seed=4), fitted.sample(200, seed=4))
    path = fitted.save(tmp_path / "older")
    config = json.loads((path / "config.json").read_text())
    config["params"].pop("missed_visits")  # what an older clinsynth wrote
    config["fitted"].pop("missed_visit_rates")
    (path / "config.json").write_text(json.dumps(config))
    assert clinsynth.load(path).missed_rates_ is None
