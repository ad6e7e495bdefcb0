"""The VAE's latent prior: N(0, I) until fitted, then a Gaussian mixture of the training latents
(codes without DP only: the mixture is a statistic of real records)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clinsynth.models.latent_prior import LatentPrior


def test_an_unfitted_prior_draws_exactly_what_randn_draws():
    prior = LatentPrior(8, 5)
    got = prior.sample(100, torch.Generator().manual_seed(3))
    assert torch.equal(got, torch.randn(100, 8, generator=torch.Generator().manual_seed(3)))


def test_a_fitted_prior_draws_from_the_mixture_of_the_latents():
    rng = np.random.default_rng(0)
    # two clusters far from N(0, I): 70 % at +3, 30 % at -3 in the first coordinate, narrow
    z = rng.normal(0.0, 0.1, size=(4000, 4))
    z[:2800, 0] += 3.0
    z[2800:, 0] -= 3.0
    prior = LatentPrior(4, 6).fit(z, seed=0)
    draws = prior.sample(20000, torch.Generator().manual_seed(1)).numpy()
    assert abs((draws[:, 0] > 0).mean() - 0.7) < 0.02
    assert abs(draws[draws[:, 0] > 0, 0].mean() - 3.0) < 0.02
    assert draws[:, 1:].std() < 0.15  # the latents' spread, not the prior's 1
    # same generator seed, same draws; the state survives a state_dict round trip
    copy = LatentPrior(4, 6)
    copy.load_state_dict(prior.state_dict())
    assert torch.equal(copy.sample(50, torch.Generator().manual_seed(2)), prior.sample(50, torch.Generator().manual_seed(2)))


def test_the_mixture_lives_in_the_active_dimensions_and_leaves_the_rest_at_the_prior():
    """Dimensions whose posterior mean does not vary carry no patient: N(0, I) there, the mixture
    (fitted to several draws per patient) only in the others; the component cap counts the active
    dimensions and the patients, not the draws."""
    rng = np.random.default_rng(0)
    mean = np.zeros((3000, 6))
    mean[:, 0] = np.where(rng.random(3000) < 0.6, 2.0, -2.0)  # one active dimension, two groups
    draws = np.concatenate([mean + rng.normal(0.0, [0.2, 1, 1, 1, 1, 1], size=mean.shape) for _ in range(4)])
    prior = LatentPrior(6, 500).fit(draws, seed=0, mean=mean)
    assert int((prior.log_weights.exp() > 0).sum()) == 3000 // (10 * 1)  # 300, not 12,000 // 10
    z = prior.sample(20000, torch.Generator().manual_seed(1)).numpy()
    assert abs((z[:, 0] > 0).mean() - 0.6) < 0.02
    assert np.allclose(z[:, 1:].std(0), 1.0, atol=0.03) and np.allclose(z[:, 1:].mean(0), 0.0, atol=0.03)
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.03


def test_a_prior_saved_with_another_number_of_components_loads_with_its_own():
    """Bundles saved when the default was 10 components load into a model built with today's default."""
    z = np.random.default_rng(0).normal(size=(4000, 4))
    old = LatentPrior(4, 10).fit(z, seed=0)
    new = LatentPrior(4, 60)
    new.load_state_dict(old.state_dict())
    assert new.components == 10
    assert torch.equal(new.sample(50, torch.Generator().manual_seed(2)), old.sample(50, torch.Generator().manual_seed(2)))


def test_few_rows_fit_fewer_components():
    z = np.random.default_rng(0).normal(size=(200, 4))
    prior = LatentPrior(4, 30).fit(z, seed=0)  # 200 rows: at most 200 // (10 × 4) = 5 components
    assert int((prior.log_weights.exp() > 0).sum()) == 5


@pytest.mark.slow
def test_the_mixture_keeps_pairs_better_than_the_prior_on_a_small_table():
    """1,600 patients × 60 codes (~2 min on a busy machine): drawing from the mixture keeps the
    pairs closer than N(0, I) draws of the same model. With a component per 128 rows (10 full
    64-dimensional covariances from 1,600 latents) it overfitted: 0.32 against N(0, I)'s 0.22;
    with one per 640 rows (2 components): 0.20."""
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.evaluate.codes import co_occurrence
    from clinsynth.models.registry import create
    from clinsynth.pipeline import split_patients

    codes, _ = simulate_ehr(2000, 60, seed=0)
    train, _ = split_patients(codes, 0.2, seed=0)
    model = create("vae", progress=False, seed=0, epochs=300).fit(train)
    mixture = co_occurrence(train, model.sample(train.n_patients, seed=1), top_codes=40)["excess_relative_rms"]
    model.modules_["prior"].fitted.fill_(False)
    prior = co_occurrence(train, model.sample(train.n_patients, seed=1), top_codes=40)["excess_relative_rms"]
    assert mixture < prior


def test_a_code_vae_without_dp_samples_from_its_training_latents_and_dp_refuses_it(tmp_path):
    """Without DP a code VAE fits the mixture after training (β = STEP_BETA) and samples from it;
    under DP the mixture would be an uncharged statistic of real records: refused, the prior stays N(0, I)."""
    import pytest

    import clinsynth as cs
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.errors import ConfigError
    from clinsynth.models.records import infer_record_schema
    from clinsynth.models.registry import create
    from clinsynth.models.vae import LATENT_MIXTURE, STEP_BETA

    codes, _ = simulate_ehr(400, 30, seed=0)
    model = create("vae", progress=False, seed=0, epochs=200).fit(codes)  # enough steps for active latents
    prior = model.modules_["prior"]
    assert bool(prior.fitted) and prior.components == LATENT_MIXTURE
    assert model.resolved_params()["latent_mixture"] == LATENT_MIXTURE and model.resolved_params()["beta"] == STEP_BETA
    model.save(tmp_path / "m")
    again = cs.load(tmp_path / "m")
    assert bool(again.modules_["prior"].fitted)
    assert again.sample(60, seed=2).matrix.toarray().tolist() == model.sample(60, seed=2).matrix.toarray().tolist()

    schema = infer_record_schema(codes, None)
    public = schema.model_copy(update={"codes": schema.codes.model_copy(update={"public": True})})
    private = create("dp-vae", progress=False, seed=0, epsilon=2.0, epochs=1).fit(codes, public)
    assert not bool(private.modules_["prior"].fitted) and private.resolved_params()["latent_mixture"] == 0
    assert private.resolved_params()["beta"] == 1.0  # DP training as before: its ledger is unchanged
    with pytest.raises(ConfigError, match="latent_mixture"):
        create("dp-vae", progress=False, epsilon=2.0, epochs=1, latent_mixture=5).fit(codes, public)
    plain = create("vae", progress=False, seed=0, epochs=3, latent_mixture=0).fit(codes)
    assert not bool(plain.modules_["prior"].fitted)
