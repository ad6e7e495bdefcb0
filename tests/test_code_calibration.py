"""After training, a code VAE without DP shifts its decoder's code logits so that each code's mean
probability over the sampler's latents is its training prevalence (``models/code_calibration.py``).
The mixture's draws had left the codes short of their prevalences (simulated EHR, seed 0: 8.2–8.3
codes per patient against the real 8.67), and every pair rate inherited the shortfall."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from clinsynth.models.code_calibration import MAX_SHIFT, calibration_draws, prevalence_shift


def test_the_shift_puts_each_codes_mean_probability_on_its_prevalence():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 40, generator=gen) * 2.0 - 1.0
    target = np.random.default_rng(1).uniform(0.001, 0.6, 40)
    shift = prevalence_shift(logits, target)
    assert np.allclose(torch.sigmoid(logits + shift).mean(0).numpy(), target, atol=1e-5)


def test_a_code_the_decoder_never_produces_is_shifted_at_most_max_shift():
    logits = torch.full((1000, 2), -30.0)
    shift = prevalence_shift(logits, np.array([0.2, 0.0]))
    assert float(shift.abs().max()) <= MAX_SHIFT and torch.isfinite(shift).all()


def test_the_draws_stay_bounded_for_large_vocabularies():
    assert calibration_draws(1000) == 16384 and calibration_draws(5000) * 5000 <= 2 ** 24
    assert calibration_draws(10 ** 6) == 1024


def test_a_code_vae_samples_its_codes_at_their_training_prevalences_and_dp_refuses_it():
    """600 simulated patients × 60 codes (a few seconds): the sampled prevalences of the 15
    commonest codes sit on the training ones — mean relative error 0.034; 0.152 with
    ``calibrate=False``, 0.084 with the previous default (β 0.5, 10 Gaussians over all 64
    dimensions, no calibration: this test failed there)."""
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.errors import ConfigError
    from clinsynth.models.records import infer_record_schema
    from clinsynth.models.registry import create

    codes, _ = simulate_ehr(600, 60, seed=0)
    p = codes.prevalence()
    top = np.argsort(-p)[:15]

    def error(model) -> float:
        q = model.sample(20000, seed=1).prevalence()
        return float(np.mean(np.abs(q[top] - p[top]) / p[top]))

    calibrated = create("vae", progress=False, seed=0, epochs=300).fit(codes)
    plain = create("vae", progress=False, seed=0, epochs=300, calibrate=False).fit(codes)
    assert calibrated.resolved_params()["calibrate"] is True
    assert error(calibrated) < 0.05
    assert error(calibrated) < error(plain)

    schema = infer_record_schema(codes, None)
    public = schema.model_copy(update={"codes": schema.codes.model_copy(update={"public": True})})
    assert create("dp-vae", epsilon=2.0).resolved_params()["calibrate"] in (None, False)
    with pytest.raises(ConfigError, match="calibrate"):
        create("dp-vae", progress=False, epsilon=2.0, epochs=1, calibrate=True).fit(codes, public)


def test_medgan_samples_its_codes_at_their_training_prevalences_and_dp_refuses_it():
    """1,200 simulated patients × 60 codes (the latent critic, as from 1,000 patients up), a short
    fit: the sampled prevalences of the 15 commonest codes sit on the training ones with the
    calibration (its default without DP) and not without it. The two fits train the same networks
    (the calibration runs after training on a generator of its own), so they differ only by the
    shift of the decoder's code logits."""
    from clinsynth.data.ehr_simulator import simulate_ehr
    from clinsynth.errors import ConfigError
    from clinsynth.models.records import infer_record_schema
    from clinsynth.models.registry import create

    codes, _ = simulate_ehr(1200, 60, seed=0)
    p = codes.prevalence()
    top = np.argsort(-p)[:15]

    def error(model) -> float:
        q = model.sample(20000, seed=1).prevalence()
        return float(np.mean(np.abs(q[top] - p[top]) / p[top]))

    settings = dict(progress=False, seed=0, pretrain_epochs=10, epochs=30)
    calibrated = create("medgan", **settings).fit(codes)
    plain = create("medgan", **settings, calibrate=False).fit(codes)
    assert calibrated.resolved_params()["calibrate"] is True
    assert error(calibrated) < 0.05
    assert error(plain) > 2 * error(calibrated)

    schema = infer_record_schema(codes, None)
    public = schema.model_copy(update={"codes": schema.codes.model_copy(update={"public": True})})
    assert create("dp-medgan", epsilon=2.0).resolved_params()["calibrate"] in (None, False)
    with pytest.raises(ConfigError, match="calibrate"):
        create("dp-medgan", progress=False, epsilon=2.0, pretrain_epochs=1, epochs=1, calibrate=True).fit(codes, public)
