"""Privacy is given to a model, not subclassed (issue 23, item 2).

``create("medgan", privacy=Privacy(epsilon=1))`` is ``create("dp-medgan", epsilon=1)``: the same
class, the same parameters, the same ledger and samples (checked against the reference runs of
``tests/test_dp_reference.py``), named ``dp-medgan``. The ``dp-`` names are registry aliases; a
model registered in the older style (a DP class of its own taking ``epsilon=``) still works.
"""
from __future__ import annotations

import pytest

import clinsynth as cs
from clinsynth.errors import ConfigError
from clinsynth.models import registry
from clinsynth.models.registry import REGISTRY, ModelEntry, create, hyperparameters
from clinsynth.pipeline import RunConfig, check_run_config

ALIASES = {name: entry.private_of for name, entry in REGISTRY.items() if entry.private_of is not None}


def test_every_model_with_a_dp_version_has_an_alias_to_the_same_class():
    assert ALIASES == {f"dp-{m}": m for m in ("acgan", "medgan", "corgan", "vae", "codetree", "bayesnet", "visitchain", "visitrnn")}
    for alias, base in ALIASES.items():
        assert REGISTRY[alias].load_class() is REGISTRY[base].load_class()  # no DP subclass left


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_privacy_given_to_a_model_builds_its_dp_alias(alias):
    base = ALIASES[alias]
    given = create(base, privacy=cs.Privacy(epsilon=2.0, accountant="rdp"), seed=4)
    shorthand = create(alias, epsilon=2.0, accountant="rdp", seed=4)
    assert given.name == shorthand.name == alias
    assert given.get_params() == shorthand.get_params()
    assert given.privacy == cs.Privacy(epsilon=2.0, delta=None, accountant="rdp", stats_share=0.1)
    assert create(alias).privacy.epsilon == 1.0  # the alias's default budget
    plain = create(base)
    assert plain.name == base and plain.privacy is None and not plain.private
    assert create(alias, **given.get_params()).get_params() == given.get_params()  # the params round trip
    assert "privacy" not in hyperparameters(base) and "epsilon" not in hyperparameters(base)


def _reference(name: str, model) -> None:
    from test_dp_reference import REFERENCE, RUNS, run

    original = RUNS[name]
    RUNS[name] = lambda: (model, original()[1])
    try:
        got, want = run(name), REFERENCE[name]
    finally:
        RUNS[name] = original
    assert [c[:2] for c in got["charges"]] == [c[:2] for c in want["charges"]]
    for g, w in zip(got["charges"], want["charges"]):
        assert g[2:] == pytest.approx(w[2:], rel=1e-12, abs=0.0), g[1]
    assert got["epsilon"] == pytest.approx(want["epsilon"], rel=1e-12)
    assert got["sample"] == want["sample"]


def test_medgan_given_privacy_matches_the_dp_medgan_reference_run():
    budget = cs.Privacy(epsilon=4.0, accountant="rdp")
    model = create("medgan", privacy=budget, pretrain_epochs=1, epochs=1, batch_size=128, max_codes_per_patient=10,
                   seed=3, progress=False)
    _reference("dp-medgan-calibrated", model)
    assert model.name == "dp-medgan"


def test_bayesnet_given_privacy_matches_the_dp_bayesnet_reference_run():
    model = create("bayesnet", privacy=cs.Privacy(epsilon=3.0), structure="tree", seed=3, progress=False)
    _reference("dp-bayesnet", model)


@pytest.mark.slow
def test_acgan_given_privacy_matches_the_dp_acgan_reference_run():
    model = create("acgan", privacy=cs.Privacy(epsilon=2.0, accountant="rdp"), epochs=2, batch_size=128,
                   select="top2", select_candidates=3, seed=3, progress=False)
    _reference("dp-acgan", model)


def test_a_budget_that_cannot_work_is_refused_in_library_terms():
    with pytest.raises(ConfigError, match="epsilon=-1"):
        cs.Privacy(epsilon=-1)
    with pytest.raises(ConfigError, match="accountant='gdp'"):
        cs.Privacy(epsilon=1, accountant="gdp")
    with pytest.raises(ConfigError, match="delta set without epsilon"):
        create("bayesnet", delta=1e-6)
    with pytest.raises(ConfigError, match="once"):
        create("medgan", privacy=cs.Privacy(epsilon=1), epsilon=2)
    with pytest.raises(ConfigError, match="delta needs epsilon"):
        check_run_config(RunConfig(target=None, delta=1e-6))
    with pytest.raises(ConfigError, match="differentially private: give it a privacy budget") as refused:
        registry.private_name("dp-medgan", None)
    assert "--" not in str(refused.value)  # library errors name settings, not command-line flags
    with pytest.raises(ConfigError, match="has no hyperparameter bogus") as refused:
        registry.check_hyperparameters("acgan", {"bogus": 1, "seed": 2})
    assert "--" not in str(refused.value)


def test_a_model_without_a_dp_version_is_refused_a_budget(monkeypatch):
    monkeypatch.setitem(REGISTRY, "plain", ModelEntry("plain", REGISTRY["bayesnet"].target, "a model with no DP alias"))
    with pytest.raises(ConfigError, match="model 'plain' has no differentially private version; DP models: dp-acgan"):
        create("plain", epsilon=1.0)


class LegacyDP:
    """A DP model registered in the older style: a class of its own that takes ε and δ itself."""

    name = "dp-legacy"

    def __init__(self, epsilon: float = 1.0, delta: float | None = None, depth: int = 2, seed: int = 0):
        self.epsilon, self.delta, self.depth, self.seed = epsilon, delta, depth, seed


def test_a_dp_model_registered_in_the_older_style_still_works(monkeypatch):
    monkeypatch.setitem(REGISTRY, "dp-legacy", ModelEntry("dp-legacy", "test_privacy_given:LegacyDP", "old style",
                                                          defaults={"epsilon": 1.0}))
    model = create("dp-legacy", epsilon=3.0, depth=4)
    assert (model.epsilon, model.delta, model.depth) == (3.0, None, 4)
    assert create("dp-legacy").epsilon == 1.0
    assert create("dp-legacy", privacy=cs.Privacy(epsilon=2.0, delta=1e-6)).__dict__ == \
        {"epsilon": 2.0, "delta": 1e-6, "depth": 2, "seed": 0}
    assert registry.private_name("legacy", cs.Privacy(epsilon=1.0)) == "dp-legacy" if "legacy" in REGISTRY else True
    assert hyperparameters("dp-legacy") == ["epsilon", "delta", "depth", "seed"]
    with pytest.raises(ConfigError, match="no hyperparameter width"):
        create("dp-legacy", width=3)


from clinsynth.models.vae import VAE  # noqa: E402


class StyleVAE(VAE):
    """A new model written in today's style on a base that takes ``privacy``..."""

    name = "stylevae"


class DPStyleVAE(StyleVAE):
    """...with an empty dp- subclass and ε among its registry defaults, as the older entries had."""

    name = "dp-stylevae"


def test_an_empty_dp_subclass_in_todays_style_is_given_its_budget(monkeypatch, tmp_path):
    from clinsynth.data.ehr_simulator import simulate_ehr

    monkeypatch.setitem(REGISTRY, "stylevae", ModelEntry("stylevae", "test_privacy_given:StyleVAE", "new"))
    monkeypatch.setitem(REGISTRY, "dp-stylevae", ModelEntry("dp-stylevae", "test_privacy_given:DPStyleVAE", "new, DP",
                                                            defaults={"epsilon": 1.0, "epochs": 1, "batch_size": 256}))
    model = create("dp-stylevae", progress=False)
    assert type(model) is DPStyleVAE and model.name == "dp-stylevae" and model.privacy.epsilon == 1.0
    assert create("stylevae", epsilon=3.0).name == "dp-stylevae"  # found by its dp- name
    codes, _ = simulate_ehr(1200, 25, seed=2)
    model = create("dp-stylevae", epsilon=4.0, progress=False).fit(codes)
    assert 0 < model.ledger_.spent() <= 4.0
    loaded = cs.load(model.save(tmp_path / "m"))
    assert loaded.name == "dp-stylevae" and loaded.ledger_.spent() == model.ledger_.spent()
    assert (loaded.sample(40, seed=1).matrix != model.sample(40, seed=1).matrix).nnz == 0
