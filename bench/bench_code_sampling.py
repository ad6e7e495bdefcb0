"""Where a code model's sampling time goes once the network has run: dense rows to a sparse
CodeMatrix, and (for ``compare.py``) the CodeMatrix back to a wide table of "0"/"1" columns.

Fits ``medgan`` with its defaults on the codes of ``simulate_ehr(5000, 1000, seed=0)`` (compare.py's
EHR table), draws 20,000 patients' dense 0/1 blocks once, then times, best of ``--repeats`` warm
runs in this process (CPU time of this thread; the whole sample by the wall clock):

* ``from_dense_rows`` on boolean blocks (the decoder's output) against the baseline it replaced:
  float32 blocks scanned by a 2-D ``np.nonzero``;
* the benchmark adapter's ``from_code_matrix`` against its baseline: ``toarray`` of the whole
  float matrix and a categorical per column with its own dtype;
* and, for scale, the whole ``model.sample(20000)``.

Both pairs are checked to give the same result, so the ratio is the same work done faster.

    python bench/bench_code_sampling.py [--rows 20000] [--repeats 10] [--json bench/results/code_sampling.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters.clinsynth import from_code_matrix  # noqa: E402

from clinsynth.data.datasets import simulate_ehr  # noqa: E402
from clinsynth.data.ehr import from_dense_rows  # noqa: E402
from clinsynth.models.registry import create  # noqa: E402


def best_seconds(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.thread_time) -> float:
    """Best of ``repeats`` warm runs; CPU time of this thread unless ``clock`` says otherwise
    (torch's sampling runs on its own threads: time it by the wall clock)."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def baseline_sparse(blocks: list[np.ndarray]) -> sp.csr_array:
    """The replaced path: float32 blocks, a 2-D nonzero scan, the same CSR assembly."""
    indptr, indices, n_rows, nnz = [np.zeros(1, np.int64)], [], 0, 0
    for block in blocks:
        r, c = np.nonzero(block.astype(np.float32))
        indptr.append(nnz + np.cumsum(np.bincount(r, minlength=block.shape[0])))
        indices.append(c.astype(np.int32))
        n_rows += block.shape[0]
        nnz += r.size
    ind = np.concatenate(indices)
    return sp.csr_array((np.ones(nnz, np.float32), ind, np.concatenate(indptr)), shape=(n_rows, blocks[0].shape[1]))


def baseline_wide(synth, columns: list[str], codes: list[str]) -> pd.DataFrame:
    """The replaced adapter path: the whole matrix densified as floats, one dtype per column."""
    index = {c: j for j, c in enumerate(synth.vocabulary)}
    dense = synth.matrix.toarray() > 0
    wide = pd.DataFrame({code: pd.Categorical.from_codes(dense[:, index[code]].astype(np.int8), categories=["0", "1"])
                         for code in codes})
    return pd.concat([synth.static.reset_index(drop=True), wide], axis=1)[columns]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    codes, _ = simulate_ehr(5_000, 1_000, seed=0)
    model = create("medgan", seed=0, progress=False)
    t0 = time.perf_counter()
    model.fit(codes)
    fit_seconds = time.perf_counter() - t0

    synth = model.sample(args.rows, seed=1)
    dense = synth.matrix.toarray() > 0
    blocks = [dense[i:i + 4096] for i in range(0, args.rows, 4096)]
    vocab = synth.vocabulary
    new, old = from_dense_rows(blocks, vocab, True).matrix, baseline_sparse(blocks)
    assert (new != old).nnz == 0, "the two dense-to-sparse paths disagree"

    names = [f"c{j}" for j in range(len(vocab))]
    renamed = type(synth)(synth.matrix, tuple(names), synth.patient_ids, synth.binary, pd.DataFrame(index=range(args.rows)))
    columns = list(renamed.static.columns) + names
    pd.testing.assert_frame_equal(from_code_matrix(renamed, columns, names), baseline_wide(renamed, columns, names))

    timings = {
        "from_dense_rows": best_seconds(lambda: from_dense_rows(blocks, vocab, True), args.repeats),
        "from_dense_rows_baseline": best_seconds(lambda: baseline_sparse(blocks), args.repeats),
        "wide_table": best_seconds(lambda: from_code_matrix(renamed, columns, names), args.repeats),
        "wide_table_baseline": best_seconds(lambda: baseline_wide(renamed, columns, names), args.repeats),
        "model_sample": best_seconds(lambda: model.sample(args.rows, seed=2), max(3, args.repeats // 3), time.perf_counter),
    }
    result = {
        "rows": args.rows, "codes": len(vocab), "codes_per_patient": round(synth.matrix.nnz / args.rows, 2),
        "fit_seconds": round(fit_seconds, 1),
        "ms": {k: round(v * 1e3, 2) for k, v in timings.items()},
        "speedup": {"from_dense_rows": round(timings["from_dense_rows_baseline"] / timings["from_dense_rows"], 1),
                    "wide_table": round(timings["wide_table_baseline"] / timings["wide_table"], 1)},
        "model_sample_rows_per_second": round(args.rows / timings["model_sample"]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
