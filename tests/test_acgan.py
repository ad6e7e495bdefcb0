"""The AC-GAN: real (short) training, the model contract, reshaping, reproducibility, bundles."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import clinsynth
from clinsynth.data.datasets import load_breast_cancer, simulate_trial
from clinsynth.errors import BundleError, ConfigError, NotFittedError
from clinsynth.schema import Schema


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    return simulate_trial(n=600, seed=3)


@pytest.fixture(scope="module")
def fitted(trial):
    schema = Schema.infer(trial, target="arm")
    return clinsynth.create("acgan", epochs=3, batch_size=128, progress=False, seed=1).fit(trial, schema)


def test_import_does_not_load_torch():
    code = "import sys, clinsynth; clinsynth.list_models(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_registry_lists_acgan_and_rejects_unknown():
    assert "acgan" in [m.name for m in clinsynth.list_models()]
    with pytest.raises(ConfigError, match="unknown model 'nope'.*acgan"):
        clinsynth.create("nope")


def test_sample_before_fit_says_what_to_do():
    with pytest.raises(NotFittedError, match="call fit"):
        clinsynth.create("acgan").sample(10)


def test_invalid_hyperparameters_fail_before_training(trial):
    with pytest.raises(ConfigError, match="epochs=0"):
        clinsynth.create("acgan", epochs=0, progress=False).fit(trial, Schema.infer(trial, target="arm"))


def test_sample_matches_schema_and_keeps_dropout_monotone(fitted, trial):
    synth = fitted.sample(2000, seed=0)
    assert list(synth.columns) == list(trial.columns)
    fitted.schema_.validate(synth.assign(participant_id=synth["participant_id"]))
    assert synth["participant_id"].str.startswith("syn-").all()
    assert not set(synth["participant_id"]) & set(trial["participant_id"])
    assert synth["sbp_rz"].notna().all()
    assert set(synth["race"].dropna()) <= set(trial["race"].dropna())
    assert (synth["age"] % 1 == 0).all() and synth["age"].between(trial["age"].min(), trial["age"].max()).all()


def test_dropout_distribution_is_kept(fitted, trial):
    from clinsynth.schema import last_observed_visit

    synth = fitted.sample(20_000, seed=5)
    groups = fitted.schema_.longitudinal
    real = np.bincount(last_observed_visit(trial, groups), minlength=13) / len(trial)
    fake = np.bincount(last_observed_visit(synth, groups), minlength=13) / len(synth)
    assert 0.5 * np.abs(real - fake).sum() < 0.06, (real.round(3), fake.round(3))
    assert fake[:12].sum() > 0.05  # early leavers exist, as in the real table
    # intermittent missingness is drawn, not erased by an argmax
    assert synth["sbp_m06"].isna().mean() > 0.005


def test_reshaping_gives_the_asked_mix_exactly(fitted):
    synth = fitted.sample(10_000, conditions={"arm": {"0": 0.5, "1": 0.5}}, seed=2)
    assert synth["arm"].value_counts().to_dict() == {0: 5000, 1: 5000}
    skewed = fitted.sample(1000, conditions={"arm": {"1": 0.9, "0": 0.1}}, seed=2)
    assert (skewed["arm"] == 1).sum() == 900
    only = fitted.sample(100, conditions={"arm": "1"}, seed=2)
    assert (only["arm"] == 1).all()


@pytest.mark.parametrize("conditions, message", [
    ({"race": {"White": 1.0}}, "only on its target 'arm'"),
    ({"arm": {"7": 1.0}}, "no such class"),
    ({"arm": {"0": -1.0}}, "non-negative"),
    ({"arm": {"0": 0.0, "1": 0.0}}, "sum to zero"),
])
def test_bad_conditions_are_refused(fitted, conditions, message):
    with pytest.raises(ConfigError, match=message):
        fitted.sample(10, conditions=conditions)


def test_same_seed_same_model_and_samples(trial):
    schema = Schema.infer(trial, target="arm")
    a = clinsynth.create("acgan", epochs=2, progress=False, seed=7).fit(trial, schema)
    b = clinsynth.create("acgan", epochs=2, progress=False, seed=7).fit(trial, schema)
    for (ka, va), (kb, vb) in zip(a.generator_.state_dict().items(), b.generator_.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    pd.testing.assert_frame_equal(a.sample(500, seed=11), b.sample(500, seed=11))
    assert not a.sample(500, seed=11).equals(a.sample(500, seed=12))


def test_folded_generator_equals_generator(fitted):
    G = fitted.generator_.eval()
    z = torch.randn(256, fitted.noise_dim)
    y = torch.randint(0, fitted.n_classes_, (256,))
    c = torch.randint(0, fitted.n_conditions_, (256,))
    with torch.no_grad():
        reference = G(z, y, torch.nn.functional.one_hot(c, fitted.n_conditions_).float())
        assert torch.allclose(G.folded()(z, y, c), reference, atol=1e-5)


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "bundle")
    assert {p.name for p in path.iterdir()} >= {"config.json", "schema.json", "encoder.json", "weights.pt"}
    config = json.loads((path / "config.json").read_text())
    assert config["model"] == "acgan" and config["params"]["epochs"] == 3 and "torch" in config["versions"]
    weights = torch.load(path / "weights.pt", weights_only=True)
    assert all(t.device.type == "cpu" for sd in weights.values() for t in sd.values())
    loaded = clinsynth.load(path)
    pd.testing.assert_frame_equal(loaded.sample(300, seed=4), fitted.sample(300, seed=4))
    # saving again over an existing bundle replaces it whole
    fitted.save(path)
    assert not list(tmp_path.glob(".bundle*"))


def test_load_refuses_damaged_bundles(fitted, tmp_path):
    with pytest.raises(BundleError, match="no config.json"):
        clinsynth.load(tmp_path)
    path = fitted.save(tmp_path / "bundle")
    (path / "encoder.json").unlink()
    with pytest.raises(BundleError, match="missing encoder.json"):
        clinsynth.load(path)


def test_snapshots_every_epoch_in_memory_and_on_disk(trial, tmp_path):
    schema = Schema.infer(trial, target="arm")
    mem = clinsynth.create("acgan", epochs=3, progress=False).fit(trial, schema)
    assert len(mem.snapshots_) == 3
    assert set(mem.snapshots_[0]) == set(mem.generator_.state_dict())
    disk = clinsynth.create("acgan", epochs=2, progress=False, snapshots="disk", snapshot_dir=str(tmp_path)).fit(trial, schema)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pt")) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert torch.equal(disk.snapshots_[1]["body.0.weight"], disk.generator_.state_dict()["body.0.weight"])


def test_plain_table_uses_dense_path_and_multiclass_target():
    df = load_breast_cancer()
    model = clinsynth.create("acgan", epochs=2, progress=False).fit(df, Schema.infer(df, target="diagnosis"))
    assert model.generator_.to_grid is None
    synth = model.sample(400, conditions={"diagnosis": {"malignant": 1, "benign": 3}}, seed=0)
    assert synth["diagnosis"].value_counts().to_dict() == {"benign": 300, "malignant": 100}
    assert synth.dtypes.equals(df.dtypes)


def test_table_without_target_trains_and_refuses_conditions(trial):
    df = trial.drop(columns=["arm"])
    model = clinsynth.create("acgan", epochs=1, progress=False).fit(df, Schema.infer(df))
    assert len(model.sample(50, seed=0)) == 50
    with pytest.raises(ConfigError):
        model.sample(50, conditions={"arm": {"0": 1.0}})


def test_device_is_checked():
    with pytest.raises(ConfigError, match="device"):
        clinsynth.models.training.resolve_device("tpu")


def test_bundle_trained_on_cuda_loads_on_cpu(fitted, tmp_path):
    path = fitted.save(tmp_path / "bundle")
    config = json.loads((path / "config.json").read_text())
    config["params"]["device"] = "cuda"  # as if trained on a GPU
    (path / "config.json").write_text(json.dumps(config))
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the fallback is for CPU-only machines")
    loaded = clinsynth.load(path)
    assert loaded.device_.type == "cpu"
    pd.testing.assert_frame_equal(loaded.sample(200, seed=1), fitted.sample(200, seed=1))


def test_epoch_selection_keeps_the_best_scored_epochs_as_the_ensemble(trial, tmp_path, monkeypatch):
    import clinsynth.models.acgan_training as acgan_training

    schema = Schema.infer(trial, target="arm")
    model = clinsynth.create("acgan", epochs=6, batch_size=128, progress=False, select="top2", select_candidates=3)
    # a scorer that prefers later epochs: a planted order the selection must follow
    scored = []

    def by_order(frame, real, schema, seed=0):
        scored.append(len(scored))
        return [0.6, 0.9, 0.7][len(scored) - 1]

    monkeypatch.setattr(acgan_training, "tstr_auroc", by_order)  # the plain training component scores epochs
    model.fit(trial, schema)
    assert model.selection_["candidates"] == [2, 4, 6]  # 1-based, evenly spaced, ending with the last
    assert model.selection_["chosen"] == [4, 6] and model.selection_["scores"] == [0.6, 0.9, 0.7]
    assert len(model.ensemble_) == 2 and not model.selection_["private"]
    for member, epoch in zip(model.ensemble_, (4, 6)):
        for k, v in member.state_dict().items():
            assert torch.equal(v, model.snapshots_[epoch - 1][k])
    synthetic = model.sample(9000, seed=0)  # three 4,096-row chunks: both members take turns
    schema.validate(synthetic)
    loaded = clinsynth.load(model.save(tmp_path / "ensemble"))
    assert loaded.selection_["chosen"] == [4, 6]
    pd.testing.assert_frame_equal(loaded.sample(9000, seed=0), synthetic)


def test_selection_needs_a_target_and_snapshots(trial):
    no_target = Schema.infer(trial.drop(columns="arm"))
    with pytest.raises(ConfigError, match="set a target"):
        clinsynth.create("acgan", epochs=1, select="top3", progress=False).fit(trial.drop(columns="arm"), no_target)
    with pytest.raises(ConfigError, match="snapshots"):
        clinsynth.create("acgan", epochs=1, select="top3", snapshots="off", progress=False).fit(trial, Schema.infer(trial, target="arm"))
    with pytest.raises(ConfigError, match="topK"):
        clinsynth.create("acgan", epochs=1, select="best", progress=False).fit(trial, Schema.infer(trial, target="arm"))


def test_weight_average_is_what_is_kept_and_snapshotted(trial):
    schema = Schema.infer(trial, target="arm")
    plain = clinsynth.create("acgan", epochs=2, batch_size=128, progress=False, seed=5).fit(trial, schema)
    averaged = clinsynth.create("acgan", epochs=2, batch_size=128, progress=False, seed=5,
                                weight_average=0.9).fit(trial, schema)
    last = averaged.snapshots_[1]
    for k, v in averaged.generator_.state_dict().items():
        assert torch.equal(v.cpu(), last[k])  # the kept generator is the last snapshot: the average
    weights = [k for k in last if k.endswith("weight")]
    assert any(not torch.equal(plain.snapshots_[1][k], last[k]) for k in weights)  # and it differs from raw training
    schema.validate(averaged.sample(500, seed=0))
    with pytest.raises(ConfigError, match="weight_average"):
        clinsynth.create("acgan", weight_average=1.0).fit(trial, schema)


def test_every_ensemble_member_takes_part_in_a_small_draw(fitted):
    calls = []

    class Counting:
        def __init__(self, folded):
            self.folded = folded

        def features_major(self, *args):
            calls.append(self)
            return self.folded.features_major(*args)

    members = [Counting(fitted.generator_.folded()) for _ in range(5)]
    fitted._sample(1000, fitted.class_probs_, 0, members=members)
    assert {id(m) for m in calls} == {id(m) for m in members}


def test_a_small_table_is_trained_for_enough_generator_steps():
    """A GAN learns per step: 150 epochs of a 455-row table in batches of 256 were 150 steps, and
    a random forest told its breast-cancer samples from real ones with AUROC 0.99 (issue 22)."""
    df = load_breast_cancer().iloc[:400]
    model = clinsynth.create("acgan", progress=False, snapshots="off", seed=0)
    model.fit(df, Schema.infer(df, target="diagnosis"))
    params = model.resolved_params()
    steps = params["epochs"] * (len(df) // params["batch_size"])
    assert params["batch_size"] == 64 and 800 <= steps <= 1200  # was 150 steps (1 per epoch)
    assert len(model.history_) == params["epochs"]
    # a large table keeps large batches and needs fewer epochs for the same steps
    batch, epochs = model._schedule(6000)
    assert batch == 128 and 5500 <= epochs * (6000 // batch) <= 6500
    # given values win
    fixed = clinsynth.create("acgan", epochs=3, batch_size=100, progress=False)
    assert fixed._schedule(400) == (100, 3)


def test_conditional_critic_judges_record_and_class_together(trial):
    schema = Schema.infer(trial, target="arm")
    model = clinsynth.create("acgan", epochs=2, batch_size=128, progress=False, seed=2, conditional_critic=True)
    model.fit(trial, schema)
    # the record, its class, and (critic_changes) the 33 visit-to-visit changes of sbp, dbp and meds
    assert model.discriminator_.net[0].in_features == model.feature_idx_.size + model.n_classes_ + 33
    assert np.isfinite(model.membership_scores(trial.iloc[:50])).all()
    assert len(model.sample(100, seed=0)) == 100


def test_critic_width_follows_the_encoded_record():
    """A 512-unit critic took the trial (141 encoded values) from detection 0.989 to 0.96 but FLCHAIN
    (31 values) from 0.70 to 0.82 (issue 22): the width is 4 × the record, within 256-512."""
    narrow = load_breast_cancer().iloc[:200]
    model = clinsynth.create("acgan", epochs=1, batch_size=64, progress=False, snapshots="off", seed=0)
    model.fit(narrow, Schema.infer(narrow, target="diagnosis"))
    assert model.discriminator_.net[0].out_features == 256 == model.resolved_params()["disc_hidden"]
    wide = simulate_trial(n=200, seed=0)
    model = clinsynth.create("acgan", epochs=1, batch_size=64, progress=False, snapshots="off", seed=0)
    model.fit(wide, Schema.infer(wide, target="arm"))
    assert model.critic_idx_.size >= 128 and model.discriminator_.net[0].out_features == 512
    given = clinsynth.create("acgan", epochs=1, batch_size=64, disc_hidden=48, progress=False, snapshots="off")
    assert given.fit(narrow, Schema.infer(narrow, target="diagnosis")).discriminator_.net[0].out_features == 48


def test_critic_dropout_acts_in_training_only_and_survives_a_bundle(trial, tmp_path):
    """Dropout regularises the critic while it trains; the kept critic (membership scores) and a
    reloaded bundle are deterministic, and a bundle saved before the option loads without it."""
    schema = Schema.infer(trial, target="arm")
    fast = {"epochs": 1, "batch_size": 128, "progress": False, "snapshots": "off", "seed": 4}
    model = clinsynth.create("acgan", critic_dropout=0.5, **fast).fit(trial, schema)
    D = model.discriminator_
    assert [m.p for m in D.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]
    assert not D.training
    scores = model.membership_scores(trial.iloc[:40])
    assert np.array_equal(scores, model.membership_scores(trial.iloc[:40]))
    loaded = clinsynth.load(model.save(tmp_path / "drop"))
    assert loaded.critic_dropout == 0.5 and not loaded.discriminator_.training
    assert np.allclose(loaded.membership_scores(trial.iloc[:40]), scores)
    pd.testing.assert_frame_equal(loaded.sample(100, seed=2), model.sample(100, seed=2))
    plain = clinsynth.create("acgan", critic_dropout=0.0, **fast).fit(trial, schema)
    path = plain.save(tmp_path / "older")
    config = json.loads((path / "config.json").read_text())
    config["params"].pop("critic_dropout")  # what an older clinsynth wrote
    config["fitted"].pop("critic_dropout")
    (path / "config.json").write_text(json.dumps(config))
    older = clinsynth.load(path)
    assert not any(isinstance(m, torch.nn.Dropout) for m in older.discriminator_.modules())
    pd.testing.assert_frame_equal(older.sample(100, seed=2), plain.sample(100, seed=2))
    with pytest.raises(ConfigError, match="critic_dropout=1.0"):
        clinsynth.create("acgan", critic_dropout=1.0, **fast).fit(trial, schema)
