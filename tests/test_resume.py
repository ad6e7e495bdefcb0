"""Resume from per-epoch checkpoints: a fit killed after epoch k and resumed ends exactly as an
uninterrupted fit with the same seed (weights, samples, selection, and under DP the ledger)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

from clinsynth.data.datasets import simulate_trial
from clinsynth.data.ehr_simulator import simulate_ehr
from clinsynth.errors import ConfigError
from clinsynth.models.registry import create
from clinsynth.schema import Schema

ACGAN = dict(epochs=5, batch_size=64, hidden=16, disc_hidden=16, noise_dim=8, weight_average=0.9,
             select="top2", select_candidates=3, seed=2, device="cpu", progress=False)
DP_ACGAN = dict(epsilon=4.0, accountant="rdp", epochs=4, batch_size=64, hidden=16, disc_hidden=16, noise_dim=8,
                select="top2", select_candidates=3, seed=2, device="cpu", progress=False)
VAE = dict(epochs=4, batch_size=64, hidden=(32,), latent_dim=8, seed=2, device="cpu", progress=False)
MEDGAN = dict(pretrain_epochs=3, epochs=3, batch_size=64, compress_dim=16, disc_hidden=(32,), seed=2, device="cpu",
              progress=False)
DP_MEDGAN = dict(epsilon=4.0, accountant="rdp", pretrain_epochs=2, epochs=3, batch_size=64, compress_dim=16,
                 disc_hidden=(32,), minibatch_averaging=False, max_codes_per_patient=5, seed=2, device="cpu",
                 progress=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks on a machine shared by several jobs: torch's thread pool only spins (a 2-s
    medGAN fit took 16-128 s with it); the results are the same kind either way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trial():
    df = simulate_trial(n=200, seed=5)
    return df, Schema.infer(df, target="arm")


@pytest.fixture(scope="module")
def simple():
    """A small table whose DP public facts can be estimated at ε = 4."""
    rng = np.random.default_rng(0)
    n = 1000
    df = pd.DataFrame({"age": rng.integers(20, 80, n), "sex": rng.choice(["F", "M"], n),
                       "bmi": rng.normal(27, 4, n).round(1), "arm": rng.choice(["0", "1"], n)})
    return df, Schema.infer(df, target="arm")


@pytest.fixture(scope="module")
def codes():
    return simulate_ehr(300, 40, seed=3)[0]


@pytest.fixture(scope="module")
def more_codes():
    """Enough patients for a DP vocabulary at ε = 4 (20 of 40 codes kept)."""
    return simulate_ehr(1500, 40, seed=3)[0]


@pytest.fixture(autouse=True)
def checkpoint_every_epoch(monkeypatch):
    """These tests kill fits after a given epoch: every epoch writes its checkpoint here."""
    from clinsynth.models.checkpoint import Checkpoint

    monkeypatch.setattr(Checkpoint, "min_interval", 0.0)


class Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


@contextmanager
def epochs_seen(monkeypatch, kill_after: int | None = None):
    """Count the checkpoints a fit writes; with ``kill_after``, raise right after that many."""
    from clinsynth.models.checkpoint import Checkpoint

    original = Checkpoint.epoch_done
    written: list[tuple[str, int]] = []

    def epoch_done(self, phase, epoch, objects):
        original(self, phase, epoch, objects)
        written.append((phase, epoch))
        if kill_after is not None and len(written) == kill_after:
            raise Killed

    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "epoch_done", epoch_done)
        yield written


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def kill_and_resume(monkeypatch, tmp_path, make, fit, kill_after: int):
    """Fit killed after ``kill_after`` checkpoints, then a fresh model resumed from them; returns
    the resumed model and the epochs (phase, epoch) that the resumed fit trained."""
    with epochs_seen(monkeypatch, kill_after), pytest.raises(Killed):
        fit(make(), checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").is_file()
    with epochs_seen(monkeypatch) as trained:
        resumed = fit(make(), checkpoint_dir=tmp_path)
    return resumed, trained


# -- tables ---------------------------------------------------------------------------------------
def test_acgan_killed_and_resumed_equals_an_uninterrupted_fit(trial, tmp_path, monkeypatch):
    df, schema = trial
    whole = create("acgan", **ACGAN).fit(df, schema)
    resumed, trained = kill_and_resume(monkeypatch, tmp_path, lambda: create("acgan", **ACGAN),
                                       lambda m, **kw: m.fit(df, schema, **kw), kill_after=2)
    assert trained == [("gan", 2), ("gan", 3), ("gan", 4)]  # it continued: epochs 1-2 were not trained again
    assert_same_state(whole.generator_, resumed.generator_)
    assert_same_state(whole.discriminator_, resumed.discriminator_)
    assert len(whole.ensemble_) == len(resumed.ensemble_) == 2
    for a, b in zip(whole.ensemble_, resumed.ensemble_):
        assert_same_state(a, b)
    assert len(resumed.snapshots_) == 5
    for e in range(5):
        for k, v in whole.snapshots_[e].items():
            assert torch.equal(v, resumed.snapshots_[e][k])
    assert whole.history_ == resumed.history_
    assert whole.selection_ == resumed.selection_
    pd.testing.assert_frame_equal(whole.sample(300, seed=4), resumed.sample(300, seed=4))


def test_acgan_snapshots_on_disk_resume_too(trial, tmp_path, monkeypatch):
    df, schema = trial
    params = {**ACGAN, "weight_average": 0.0, "snapshots": "disk", "snapshot_dir": str(tmp_path / "snaps")}
    whole = create("acgan", **{**params, "snapshot_dir": str(tmp_path / "snaps-whole")}).fit(df, schema)
    resumed, trained = kill_and_resume(monkeypatch, tmp_path / "ckpt", lambda: create("acgan", **params),
                                       lambda m, **kw: m.fit(df, schema, **kw), kill_after=3)
    assert len(trained) == 2
    assert whole.selection_ == resumed.selection_
    pd.testing.assert_frame_equal(whole.sample(200, seed=1), resumed.sample(200, seed=1))


def test_dp_acgan_resume_keeps_the_ledger_and_never_charges_twice(simple, tmp_path, monkeypatch):
    df, schema = simple
    whole = create("dp-acgan", **DP_ACGAN).fit(df, schema)
    with epochs_seen(monkeypatch, kill_after=2), pytest.raises(Killed):
        create("dp-acgan", **DP_ACGAN).fit(df, schema, checkpoint_dir=tmp_path)

    # resuming must neither re-draw the public facts nor re-calibrate and re-charge DP-SGD
    import clinsynth.privacy.ledger as ledger
    import clinsynth.privacy.statistics as statistics

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed fit re-ran a charged mechanism")

    monkeypatch.setattr(statistics, "release_statistics", refuse)
    monkeypatch.setattr(ledger, "calibrate_noise", refuse)
    with epochs_seen(monkeypatch) as trained:
        resumed = create("dp-acgan", **DP_ACGAN).fit(df, schema, checkpoint_dir=tmp_path)
    assert trained == [("gan", 2), ("gan", 3)]
    assert resumed.ledger_.state_dict() == whole.ledger_.state_dict()
    assert resumed.ledger_.table() == whole.ledger_.table()
    assert [c["purpose"].split(":")[0] for c in resumed.ledger_.table()] == \
        ["public facts", "discriminator training", "epoch selection"]
    assert resumed.noise_multiplier_ == whole.noise_multiplier_
    assert resumed.schema_.to_json() == whole.schema_.to_json()
    assert resumed.encoder_.state_dict() == whole.encoder_.state_dict()
    assert resumed.selection_ == whole.selection_
    np.testing.assert_array_equal(resumed.condition_table_, whole.condition_table_)
    assert_same_state(whole.generator_, resumed.generator_)
    assert_same_state(whole.discriminator_, resumed.discriminator_)
    pd.testing.assert_frame_equal(whole.sample(300, seed=4), resumed.sample(300, seed=4))


def test_vae_on_a_table_killed_and_resumed_equals_an_uninterrupted_fit(trial, tmp_path, monkeypatch):
    df, schema = trial
    whole = create("vae", **VAE).fit(df, schema)
    resumed, trained = kill_and_resume(monkeypatch, tmp_path, lambda: create("vae", **VAE),
                                       lambda m, **kw: m.fit(df, schema, **kw), kill_after=1)
    assert trained == [("vae", 1), ("vae", 2), ("vae", 3)]
    assert_same_state(whole.modules_["vae"], resumed.modules_["vae"])
    assert whole.history_ == resumed.history_
    pd.testing.assert_frame_equal(whole.sample(300, seed=4), resumed.sample(300, seed=4))


# -- code matrices ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kill_after", [2, 4], ids=["in-pretraining", "in-gan"])
def test_medgan_killed_in_either_phase_and_resumed_equals_an_uninterrupted_fit(codes, tmp_path, monkeypatch,
                                                                              kill_after):
    whole = create("medgan", **MEDGAN).fit(codes)
    resumed, trained = kill_and_resume(monkeypatch, tmp_path, lambda: create("medgan", **MEDGAN),
                                       lambda m, **kw: m.fit(codes, **kw), kill_after=kill_after)
    everything = [("autoencoder", e) for e in range(3)] + [("discriminator", e) for e in range(3)]
    assert trained == everything[kill_after:]
    from clinsynth.models.checkpoint import latest

    assert latest(tmp_path) == {"model": "medgan", "phase": "discriminator", "epoch": 3, "epochs": 3}
    for name in ("encoder", "decoder", "generator", "discriminator"):
        assert_same_state(whole.modules_[name], resumed.modules_[name])
    assert whole.history_ == resumed.history_
    a, b = whole.sample(200, seed=3), resumed.sample(200, seed=3)
    assert (a.matrix != b.matrix).nnz == 0


def test_dp_medgan_resume_keeps_vocabulary_and_ledger(more_codes, tmp_path, monkeypatch):
    codes = more_codes
    whole = create("dp-medgan", **DP_MEDGAN).fit(codes)

    import clinsynth.privacy.ledger as ledger
    import clinsynth.privacy.vocabulary as vocabulary

    with epochs_seen(monkeypatch, kill_after=3), pytest.raises(Killed):
        create("dp-medgan", **DP_MEDGAN).fit(codes, checkpoint_dir=tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed fit re-ran a charged mechanism")

    monkeypatch.setattr(vocabulary, "release_vocabulary", refuse)
    monkeypatch.setattr(ledger, "calibrate_noise", refuse)
    with epochs_seen(monkeypatch) as trained:
        resumed = create("dp-medgan", **DP_MEDGAN).fit(codes, checkpoint_dir=tmp_path)
    assert trained == [("discriminator", 1), ("discriminator", 2)]
    assert resumed.ledger_.table() == whole.ledger_.table()
    assert resumed.vocabulary_release_ == whole.vocabulary_release_
    assert len(whole.schema_.codes.vocabulary) < codes.n_codes  # the vocabulary was really released
    assert resumed.schema_.codes.vocabulary == whole.schema_.codes.vocabulary
    for name in ("generator", "decoder"):
        assert_same_state(whole.modules_[name], resumed.modules_[name])
    a, b = whole.sample(200, seed=3), resumed.sample(200, seed=3)
    assert (a.matrix != b.matrix).nnz == 0


# -- a checkpoint belongs to one fit -------------------------------------------------------------
def test_a_checkpoint_of_another_fit_is_refused_in_one_line(trial, tmp_path, monkeypatch):
    df, schema = trial
    params = {**ACGAN, "select": "last"}
    with epochs_seen(monkeypatch, kill_after=1), pytest.raises(Killed):
        create("acgan", **params).fit(df, schema, checkpoint_dir=tmp_path)
    cases = [
        (lambda: create("acgan", **{**params, "seed": 3}).fit(df, schema, checkpoint_dir=tmp_path), "parameters"),
        (lambda: create("acgan", **params).fit(df.iloc[1:], schema, checkpoint_dir=tmp_path), "data"),
        (lambda: create("acgan", **params).fit(df, Schema.infer(df, target="female"), checkpoint_dir=tmp_path),
         "schema"),
        (lambda: create("vae", **VAE).fit(df, schema, checkpoint_dir=tmp_path), "model"),
    ]
    for fit, what in cases:
        with pytest.raises(ConfigError, match=f"another fit.*{what}") as err:
            fit()
        assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)
    # progress is display only: it does not make another fit
    with epochs_seen(monkeypatch) as trained:
        create("acgan", **{**params, "progress": True}).fit(df, schema, checkpoint_dir=tmp_path)
    assert len(trained) == 4


def test_a_damaged_checkpoint_is_one_line(trial, tmp_path):
    df, schema = trial
    tmp_path.joinpath("checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="damaged") as err:
        create("acgan", **ACGAN).fit(df, schema, checkpoint_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(trial, tmp_path):
    df, schema = trial
    target = tmp_path / "file"
    target.write_text("mine")
    with pytest.raises(ConfigError, match="not a directory"):
        create("acgan", **ACGAN).fit(df, schema, checkpoint_dir=target)
    assert target.read_text() == "mine"


def test_bayesnet_takes_checkpoint_dir_and_just_fits(trial, tmp_path):
    df, schema = trial
    model = create("bayesnet", seed=0).fit(df, schema, checkpoint_dir=tmp_path / "ckpt")
    assert model.is_fitted
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_a_finished_checkpoint_gives_the_same_model_without_training(trial, tmp_path, monkeypatch):
    from clinsynth.models.checkpoint import latest, remove

    df, schema = trial
    params = {**ACGAN, "select": "last"}
    first = create("acgan", **params).fit(df, schema, checkpoint_dir=tmp_path)
    assert latest(tmp_path) == {"model": "acgan", "phase": "gan", "epoch": 5, "epochs": 5}
    with epochs_seen(monkeypatch) as trained:
        again = create("acgan", **params).fit(df, schema, checkpoint_dir=tmp_path)
    assert trained == []
    pd.testing.assert_frame_equal(first.sample(100, seed=0), again.sample(100, seed=0))
    # remove() deletes what the checkpoint wrote, a kill's leftover temporary file too, and nothing else
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"cut short")
    (tmp_path / "notes.txt").write_text("the steward's")
    remove(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert latest(tmp_path) is None


# -- a real kill ------------------------------------------------------------------------------------
KILLED_FIT = textwrap.dedent("""
    import sys, time
    import torch
    from clinsynth.data.datasets import simulate_trial
    from clinsynth.models import checkpoint
    from clinsynth.models.registry import create
    from clinsynth.schema import Schema

    original = checkpoint.Checkpoint.epoch_done
    checkpoint.Checkpoint.min_interval = 0.0

    def slow(self, *args):  # time for the parent to kill us between epochs
        original(self, *args)
        time.sleep(0.5)

    checkpoint.Checkpoint.epoch_done = slow
    torch.set_num_threads(1)  # as the test process, whose uninterrupted fit it is compared with
    df = simulate_trial(n=200, seed=5)
    create("acgan", **{params!r}).fit(df, Schema.infer(df, target="arm"), checkpoint_dir=sys.argv[1])
    print("finished")
""")


def test_a_fit_killed_by_sigkill_resumes_to_the_uninterrupted_model(trial, tmp_path, monkeypatch):
    df, schema = trial
    params = {**ACGAN, "select": "last", "epochs": 6}
    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_FIT.format(params=params), str(ckpt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not (ckpt / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared in 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert b"finished" not in proc.stdout.read()

    whole = create("acgan", **params).fit(df, schema)
    with epochs_seen(monkeypatch) as trained:
        resumed = create("acgan", **params).fit(df, schema, checkpoint_dir=ckpt)
    assert 1 <= len(trained) < 6
    assert_same_state(whole.generator_, resumed.generator_)
    pd.testing.assert_frame_equal(whole.sample(300, seed=4), resumed.sample(300, seed=4))


def test_fast_epochs_write_a_checkpoint_at_most_once_per_interval_and_after_the_last(trial, tmp_path,
                                                                                     monkeypatch):
    from clinsynth.models.checkpoint import Checkpoint, latest

    df, schema = trial
    monkeypatch.setattr(Checkpoint, "min_interval", 3600.0)
    writes = []
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "fingerprint" in obj:
            writes.append(obj["epoch"])
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    create("acgan", **{**ACGAN, "select": "last"}).fit(df, schema, checkpoint_dir=tmp_path)
    assert writes == [4]
    assert latest(tmp_path)["epoch"] == 5


# -- progress without a terminal -------------------------------------------------------------------
def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(capfd):
    from clinsynth.models.training import TrainingProgress

    with TrainingProgress(4, "acgan training", interval=0.0) as bar:
        for e in range(4):
            bar.advance(d_fake=0.5 + e, g=1.25)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert out == ""
    assert len(lines) == 4
    assert lines[0].startswith("acgan training: epoch 1/4")
    assert "d_fake 0.500" in lines[0] and "g 1.250" in lines[0] and "elapsed" in lines[0]
    assert lines[-1].startswith("acgan training: epoch 4/4") and "d_fake 3.500" in lines[-1]


def test_progress_lines_are_at_most_one_per_interval_and_always_the_last(capfd):
    from clinsynth.models.training import TrainingProgress

    with TrainingProgress(50, "vae training", interval=3600.0, start=10) as bar:
        for _ in range(40):
            bar.advance(loss=2.0)
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("vae training: epoch 50/50")


def test_progress_off_prints_nothing_and_a_model_fit_logs_its_epochs(trial, capfd):
    from clinsynth.models.training import TrainingProgress

    with TrainingProgress(3, "x", enabled=False, interval=0.0) as bar:
        for _ in range(3):
            bar.advance(loss=1.0)
    assert capfd.readouterr() == ("", "")
    df, schema = trial
    create("acgan", **{**ACGAN, "epochs": 2, "select": "last", "progress": True}).fit(df, schema)
    err = capfd.readouterr().err
    assert "acgan training: epoch 2/2" in err and "g " in err
