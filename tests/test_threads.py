"""One place sets the thread counts: from --threads, CLINSYNTH_THREADS, or the CPUs this process may use."""
from __future__ import annotations

import pytest

from clinsynth import threads
from clinsynth.errors import ConfigError


@pytest.fixture
def fresh(monkeypatch):
    """A clean slate: no count configured yet, no environment override; restored afterwards."""
    monkeypatch.setattr(threads, "_state", {})
    monkeypatch.delenv(threads.ENV_VARIABLE, raising=False)
    for name in threads._LIBRARY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    threads._limits.clear()


def _cgroup_v2(tmp_path, quota: str, nested: str | None = None):
    root = tmp_path / "cg"
    (root / "box").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "box" / "cpu.max").write_text(quota + "\n")
    if nested is not None:
        (root / "box" / "job").mkdir()
        (root / "box" / "job" / "cpu.max").write_text(nested + "\n")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/box/job\n" if nested is not None else "0::/box\n")
    return root, proc


def test_cgroup_v2_quota_is_read_and_the_tightest_ancestor_wins(tmp_path):
    root, proc = _cgroup_v2(tmp_path, "150000 100000")
    assert threads.quota_cpus(root, proc) == 1.5
    root, proc = _cgroup_v2(tmp_path / "b", "400000 100000", nested="50000 100000")
    assert threads.quota_cpus(root, proc) == 0.5
    root, proc = _cgroup_v2(tmp_path / "c", "max 100000")
    assert threads.quota_cpus(root, proc) is None


def test_cgroup_v1_quota_is_read(tmp_path):
    base = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    base.mkdir(parents=True)
    (base / "cpu.cfs_quota_us").write_text("300000\n")
    (base / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert threads.quota_cpus(tmp_path / "cg", proc) == 3.0
    (base / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert threads.quota_cpus(tmp_path / "cg", proc) is None
    assert threads.quota_cpus(tmp_path / "cg", tmp_path / "absent") is None


def test_available_cpus_takes_affinity_quota_and_load(monkeypatch):
    monkeypatch.setattr(threads, "affinity_cpus", lambda: 8)
    monkeypatch.setattr(threads, "quota_cpus", lambda: 2.5)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0)
    assert threads.available_cpus() == 2  # the quota, rounded down
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1)
    assert threads.available_cpus() == 1
    monkeypatch.setattr(threads, "busy_cpus", lambda: 9)
    assert threads.available_cpus() == 1  # never none
    monkeypatch.setattr(threads, "quota_cpus", lambda: None)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 3)
    assert threads.available_cpus() == 5


def test_precedence_and_what_each_library_gets(fresh, monkeypatch):
    import torch

    monkeypatch.setattr(threads, "available_cpus", lambda: 3)
    assert threads.configure() == 3
    assert threads.describe() == {"threads": 3, "torch_threads": 1, "source": "available CPUs"}
    assert torch.get_num_threads() == 1  # small networks: one thread (see the module docstring)
    assert {threads._LIBRARY_VARIABLES[0]: "3"}.items() <= dict(__import__("os").environ).items()
    assert threads.configure() == 3  # a second call without a count keeps the first
    monkeypatch.setenv(threads.ENV_VARIABLE, "2")
    monkeypatch.setattr(threads, "_state", {})
    assert threads.configure() == 2 and threads.describe()["torch_threads"] == 2
    assert torch.get_num_threads() == 2
    assert threads.configure(1) == 1 and threads.describe()["source"] == "--threads"  # the option wins
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_counts_are_refused(fresh, monkeypatch, bad):
    monkeypatch.setenv(threads.ENV_VARIABLE, bad)
    with pytest.raises(ConfigError, match="CLINSYNTH_THREADS must be a whole number of threads ≥ 1"):
        threads.configure()


def test_threadpools_follow_the_count(fresh):
    from threadpoolctl import threadpool_info

    import numpy  # noqa: F401 - loads its BLAS

    threads.configure(1)
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())


def test_a_model_fit_gives_torch_its_count(fresh, monkeypatch):
    import torch

    from clinsynth.models.training import resolve_device

    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    torch.set_num_threads(2)  # as a library or notebook may have left it
    resolve_device("cpu")
    assert torch.get_num_threads() == 1


def test_cli_threads_option_sets_every_count(fresh, tmp_path):
    import torch

    from clinsynth.cli import main
    from clinsynth.data.datasets import simulate_trial

    data = tmp_path / "trial.csv"
    simulate_trial(n=120, seed=3).to_csv(data, index=False)
    assert main(["fit", str(data), "--target", "arm", "--model", "acgan", "--epochs", "1", "--threads", "2",
                 "--quiet", "--out", str(tmp_path / "m")]) == 0
    assert threads.describe() == {"threads": 2, "torch_threads": 2, "source": "--threads"}
    assert torch.get_num_threads() == 2
    assert main(["fit", str(data), "--threads", "0", "--out", str(tmp_path / "n")]) == 2  # typer: at least 1
    torch.set_num_threads(1)
