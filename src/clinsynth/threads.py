"""How many threads clinsynth's numeric libraries use: decided here, once, for all of them.

PyTorch, numba, the BLAS under numpy and the OpenMP loops of scikit-learn each start as many
threads as the machine has cores, and each spins while it waits for the others. On a 2-core
server that other people also use, that many threads on the cores one process actually gets
turned a 2 s medGAN fit into 16–128 s. So the count comes from what this process may use:

1. ``--threads N`` (``configure(N)``) or the ``CLINSYNTH_THREADS`` environment variable, if given;
2. else the CPUs the process may run on (its affinity mask), capped by its cgroup CPU quota
   (a container's ``--cpus``), less the cores other processes keep busy (the 1-minute load
   average, rounded down), and at least one.

The count is applied to every library at once: environment variables for the libraries not yet
loaded (and for child processes), threadpoolctl's limits for the BLAS and OpenMP already loaded.
Nothing else in clinsynth sets a thread count; code that runs its own workers asks :func:`count`.

PyTorch is the exception, by measurement: it runs on ONE thread unless a count is given. Our
networks are small (a few hundred units, batches of ≤ 1,000), so each operation is tens of
microseconds and splitting it across threads buys little, while one stalled thread makes every
operation wait a whole time slice: 5 epochs of the AC-GAN on breast cancer took 0.08–0.12 s on
one thread and 2.0–12.5 s on two, on this 2-core machine under a load of 1–4. And a reduction's
rounding depends on how many threads share it, so the same seed gave different samples on one
and on two threads: a count that followed the machine's load would make a model depend on what
else was running. With ``--threads N`` PyTorch gets N too (recorded in the manifest), for large
code matrices on an idle many-core server.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from clinsynth.errors import ConfigError

ENV_VARIABLE = "CLINSYNTH_THREADS"
_LIBRARY_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                      "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")
_state: dict[str, int | str] = {}
_limits: list[object] = []  # threadpoolctl's limiter, kept alive so its limits stay in force


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity mask; the CPU count where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cgroup_dirs(root: Path, proc_cgroup: Path) -> list[tuple[str, Path]]:
    """``(version, directory)`` of this process's CPU cgroup and of each of its ancestors."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found: list[tuple[str, Path]] = []
    for line in lines:  # "hierarchy:controllers:path"; cgroup v2 is "0::path"
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":
            version, base = "v2", root
        elif "cpu" in controllers.split(","):
            version = "v1"
            base = next((root / name for name in (controllers, "cpu", "cpu,cpuacct") if (root / name).is_dir()), root)
        else:
            continue
        parts = [p for p in path.split("/") if p]
        found += [(version, base.joinpath(*parts[:depth])) for depth in range(len(parts), -1, -1)]
    return found


def _quota(version: str, directory: Path) -> float | None:
    """The CPU quota of one cgroup directory in CPUs, or None when it sets none."""
    try:
        if version == "v2":
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError, ZeroDivisionError):
        return None


def quota_cpus(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest cgroup CPU quota over this process's cgroup and its ancestors, in CPUs (None: no quota)."""
    quotas = [q for version, directory in _cgroup_dirs(root, proc_cgroup) if (q := _quota(version, directory))]
    return min(quotas) if quotas else None


def busy_cpus() -> int:
    """Cores other processes keep busy: the 1-minute load average, rounded down (0 where unknown)."""
    try:
        return int(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0


def available_cpus() -> int:
    """CPUs this process can expect to have to itself (see the module docstring), at least 1."""
    cpus = affinity_cpus()
    quota = quota_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus - busy_cpus())


def _parse(value: int | str, source: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a whole number of threads ≥ 1, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"{source} must be a whole number of threads ≥ 1, got {n}")
    return n


def configure(threads: int | None = None) -> int:
    """Set every numeric library's thread count and return it.

    ``threads`` (the CLI's ``--threads``) wins; else ``CLINSYNTH_THREADS``; else
    :func:`available_cpus` (PyTorch then keeps one thread; see the module docstring). Without an
    explicit count, a second call keeps the first call's count.
    """
    if threads is not None:
        n, source = _parse(threads, "--threads"), "--threads"
    elif _state:
        return int(_state["count"])
    elif os.environ.get(ENV_VARIABLE, "").strip():
        n, source = _parse(os.environ[ENV_VARIABLE].strip(), ENV_VARIABLE), ENV_VARIABLE
    else:
        n, source = available_cpus(), "available CPUs"
    torch_threads = 1 if source == "available CPUs" else n
    _apply(n, torch_threads)
    _state.update(count=n, torch=torch_threads, source=source)
    return n


def count() -> int:
    """The configured thread count (configuring it first from the machine, if nobody has)."""
    return configure()


def torch_count() -> int:
    """PyTorch's intra-op thread count: 1 unless a count was given."""
    configure()
    return int(_state["torch"])


def describe() -> dict[str, int | str]:
    """The counts and where they came from, for the manifest."""
    configure()
    return {"threads": int(_state["count"]), "torch_threads": int(_state["torch"]), "source": str(_state["source"])}


def ensure_torch() -> None:
    """Give PyTorch its count; called where a model first uses PyTorch (it may load after :func:`configure`)."""
    import torch

    n = torch_count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _apply(n: int, torch_threads: int) -> None:
    for name in _LIBRARY_VARIABLES:  # read when each library loads, and by child processes
        if name == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            continue  # numba refuses a changed value once its pool has started; its pool is left alone (below)
        os.environ[name] = str(n)
    # numba: clinsynth's compiled loops are serial (``nogil``, run on threads of our own, sized by
    # count()), so numba's parallel pool is never started; starting it just to size it would pin
    # NUMBA_NUM_THREADS for the rest of the process.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        _limits.clear()
        _limits.append(threadpool_limits(limits=n))  # BLAS and OpenMP libraries already loaded
    torch = sys.modules.get("torch")
    if torch is not None:  # last: PyTorch's OpenMP may be one of the libraries just limited to n
        torch.set_num_threads(torch_threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before torch's first parallel work; then it stays
            pass
