"""`auto`, the default model: a documented rule over what is known before a record is read."""
from __future__ import annotations

import json

import pytest

import clinsynth as cs
from clinsynth.data.datasets import simulate_trial
from clinsynth.errors import ConfigError, NotFittedError
from clinsynth.models.registry import InputFacts, choose_model


@pytest.mark.parametrize("facts, chosen", [
    (InputFacts("table", 455, 31), "bayesnet"),
    (InputFacts("table", 6299, 9, epsilon=1.0), "dp-bayesnet"),
    (InputFacts("table", 120, 50, n_visit_groups=3, epsilon=4.0), "dp-bayesnet"),
    (InputFacts("codes", 300, 170), "codetree"),
    (InputFacts("codes", 300, 170, epsilon=1.0), "dp-codetree"),
    (InputFacts("codes", 4000, 1002), "codetree"),
    (InputFacts("codes", 20_000, 1002, epsilon=1.0), "dp-medgan"),
    (InputFacts("codes", 4000, 1002, epsilon=1.0), "dp-medgan"),
    (InputFacts("codes", 999, 1002, epsilon=1.0), "dp-codetree"),  # every DP code model warns below 1,000
    (InputFacts("codes", 4000, 1002, epsilon=4.0), "dp-medgan"),
])
def test_the_rule(facts, chosen):
    choice = choose_model(facts)
    assert choice.name == chosen
    assert choice.reason.startswith(f"auto chose {chosen} — ")
    assert f"{facts.n_records:,}" in choice.reason and ("without DP" in choice.reason) == (facts.epsilon is None)
    assert choice.to_dict()["facts"]["n_records"] == facts.n_records


def test_unknown_kind_is_refused():
    with pytest.raises(ConfigError, match="'table', 'codes' or 'patients'"):
        choose_model(InputFacts("visits", 10, 3))


def test_long_format_gets_the_visit_chain():
    assert choose_model(InputFacts("patients", 2000, 11)).name == "visitchain"
    choice = choose_model(InputFacts("patients", 2000, 11, epsilon=1.0))
    assert choice.name == "dp-visitchain" and "2,000 patients × 11 columns at ε = 1" in choice.reason


def test_api_auto_fits_the_chosen_model_and_saves_it(tmp_path):
    df = simulate_trial(n=300, seed=2)
    schema = cs.Schema.infer(df, target="arm")
    model = cs.create("auto", seed=0, progress=False)
    with pytest.raises(NotFittedError, match="chooses when it is fitted"):
        model.sample(10)
    fitted = model.fit(df, schema)
    assert fitted.name == "bayesnet" and model.choice_.name == "bayesnet"
    assert len(model.sample(25, seed=1)) == 25  # the wrapper stands for the chosen model
    model.save(tmp_path / "m")
    assert cs.load(tmp_path / "m").name == "bayesnet"


def test_api_auto_under_dp_spends_at_most_its_budget():
    df = simulate_trial(n=600, seed=3)
    model = cs.create("auto", epsilon=1.0, progress=False)
    model.fit(df, cs.Schema.infer(df, target="arm"))
    assert model.name == "dp-bayesnet" and model.ledger_.spent() <= 1.0 + 1e-9


def test_a_hyperparameter_the_choice_lacks_is_refused_naming_it():
    df = simulate_trial(n=200, seed=4)
    with pytest.raises(ConfigError, match="model 'bayesnet' \\(auto's choice for tables like this one"):
        cs.create("auto", epochs=5).fit(df, cs.Schema.infer(df, target="arm"))


def test_run_without_model_records_the_choice(tmp_path, capsys):
    from clinsynth.cli import main

    data = tmp_path / "trial.csv"
    simulate_trial(n=800, seed=5).to_csv(data, index=False)
    out = tmp_path / "release"
    assert main(["run", str(data), "--target", "arm", "--epsilon", "1", "--evaluate", "none", "--out", str(out)]) == 0
    assert "auto chose dp-bayesnet — a table of 640 rows × 50 columns at ε = 1" in capsys.readouterr().err
    manifest = json.loads((out / "steward" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "dp-bayesnet" and manifest["model"]["choice"]["chosen"] == "dp-bayesnet"
    assert manifest["threads"]["torch_threads"] >= 1
    assert "auto chose dp-bayesnet" in (out / "steward" / "report.html").read_text()
    assert main(["run", str(data), "--target", "arm", "--model", "acgan", "--epochs", "1", "--evaluate", "none",
                 "--out", str(tmp_path / "named")]) == 0  # an explicit model wins and records no choice
    assert "choice" not in json.loads((tmp_path / "named" / "steward" / "manifest.json").read_text())["model"]
