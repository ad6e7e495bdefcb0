"""A simulated EHR code extract: patients × diagnosis codes, sparse (SIMULATED data).

``simulate_ehr`` returns **SIMULATED** data, drawn from the small generative model below. It is
not derived from any patient data and its codes are not ICD codes. It exists so that the code
models (medGAN, corGAN) and their evaluation can be developed and tested on a matrix with the
awkward parts of a real extract — thousands of codes, a long tail of rare ones, correlated
comorbidities, age and sex structure — at any size, without access to restricted data.

Vocabulary: ``n_codes`` fake codes grouped into categories, ``"D042.7"``: ``D``, a three-digit
category (more digits past 1,000 categories), a dot and a one-digit subcode; a category with a
single code has no subcode (``"D117"``). Real ICD-10 categories are a letter and *two* digits,
so no code here is a real one. Categories hold 1–9 codes (uniform); ``read_long(...,
truncate=4)`` merges subcodes into their category, as ICD-9 truncation to three digits does.
The vocabulary is in sorted order and depends only on ``n_codes`` and ``seed``.

Assumptions of the simulation (numbers are design targets, not fitted to any data):

* Patients: adults, age ~ Normal(52, 19) truncated to 18–95 (whole years); sex ``"F"`` with
  probability 0.55, else ``"M"``; a latent frailty ``u ~ Normal(0, 1)`` per patient, not returned.
* Comorbidity clusters: ``K = clip(n_codes / 40, 20, 40)`` latent disease groups, but at most
  a third of the categories (vocabularies under ~300 codes have fewer clusters, under ~100
  fewer than three sex-specific ones). About 60 % of categories belong to one cluster each
  (all their codes with it; every cluster has at least one category); the rest are "background".
  Cluster ``k`` is active in a patient with probability
  ``sigmoid(logit(pi_k) + beta_k * (age - 50) / 10 + 0.7 * u)``: base prevalences
  ``pi_k = 0.3 * k**-0.9`` (a few common clusters such as a hypertension/diabetes group, most
  rare), age slopes ``beta_k ~ Uniform(0.1, 0.5)`` per decade, so older and frailer patients
  have more active clusters, and a shared frailty that correlates clusters. Three clusters are
  sex-specific (never one of the two commonest): one female-only whose prevalence falls with age
  (obstetric-like, slope -0.9/decade), one more female-only (0.3/decade) and one male-only
  (0.6/decade, prostate-like).
* Codes of an active cluster appear independently with probability ``q = 0.85 * rank**-0.8``
  (floor 0.01), ranks shuffled within the cluster: one or two core codes in most patients with
  the cluster, then a tail. Two codes of the same cluster therefore co-occur far more often than
  their prevalences predict (lift roughly ``1 / pi_k``).
* Every code also appears on its own ("background": symptoms, screening, one-off problems) with
  a Zipf-like probability ``0.3 * r**-1.05`` over a random rank ``r`` (floor 2e-5; × 0.3 for
  cluster codes), multiplied by ``exp(gamma * (age - 50) / 10)`` with
  ``gamma ~ Normal(0.25, 0.2)`` per code (mostly rising with age; the age term uses 10-year age
  bands 18–29, 30–39, …, 90+) and capped at 0.9. 2 % of background codes are female-only and
  1.5 % male-only. A code present from both sources is present once.
* Result for the defaults (20,000 × 1,000): the commonest codes are in ~15–30 % of patients,
  the median code in ~0.35 % and three quarters below 1 %; patients have ~9 distinct codes on
  average (~5 under 40, ~14 from 65 on) and ~9 % have none. With 5,000 codes: ~15 codes per
  patient, median code prevalence ~0.1 %.
* ``binary=False`` gives visit counts: ``1 + Poisson(lambda_code * w)`` for each present code,
  with ``lambda`` log-normal (median 0.8 for cluster codes — chronic conditions recur — and 0.3
  for background codes) and a per-patient utilisation ``w ~ Gamma(2, 0.5) * exp(0.3 * u)``.
* Everything is independent given the quantities above. Ids are ``"P000001"``, … in row order.

Implementation: rows are generated in chunks of 100,000 patients. Within a chunk each
(source, code) pair is a run of independent Bernoulli trials over the patients it applies to
(the members of a cluster, or of an age band × sex group), sampled exactly by geometric gaps
between successes, so work and memory grow with the number of codes present, never with
patients × codes. No dense patients × codes array is built. Same ``seed`` → identical output;
counts are drawn from a separate stream, so ``binary=False`` has exactly the codes of
``binary=True`` with the same seed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from clinsynth.data.ehr import CodeMatrix
from clinsynth.errors import ConfigError

__all__ = ["simulate_ehr"]

CHUNK_ROWS = 100_000
AGE_MEAN, AGE_SD, AGE_RANGE = 52.0, 19.0, (18, 95)
P_FEMALE = 0.55
FRAILTY_SD = 0.7
AGE_BAND_EDGES = np.array([30, 40, 50, 60, 70, 80, 90])        # bands 18–29, …, 90+
AGE_BAND_MID = np.array([24.0, 35, 45, 55, 65, 75, 85, 92])
P_CLUSTERED_CATEGORY = 0.6
CLUSTER_TOP, CLUSTER_ZIPF = 0.3, 0.9
CODE_Q_TOP, CODE_Q_ZIPF, CODE_Q_MIN = 0.85, 0.8, 0.01
BACKGROUND_TOP, BACKGROUND_ZIPF, BACKGROUND_MIN = 0.3, 1.05, 2e-5
BACKGROUND_CLUSTERED = 0.3
BACKGROUND_CAP = 0.9
P_FEMALE_ONLY_CODE, P_MALE_ONLY_CODE = 0.02, 0.015


def simulate_ehr(n_patients: int = 20_000, n_codes: int = 1_000, seed: int = 0,
                 binary: bool = True) -> tuple[CodeMatrix, pd.DataFrame]:
    """Simulate an EHR code extract (SIMULATED data; see the module docstring for every assumption).

    Args:
        n_patients: rows, ≥ 1. 1,000,000 × 5,000 takes seconds.
        n_codes: vocabulary size, ≥ 20.
        seed: seed for ``numpy.random.default_rng``; same seed, same output.
        binary: presence (0/1) if true, visit counts otherwise.

    Returns:
        ``(codes, demographics)``: a :class:`~clinsynth.data.ehr.CodeMatrix` (CSR, float32) and a
        frame with ``patient_id`` (same order as the matrix rows), ``age`` (int64) and ``sex``
        (``"F"``/``"M"``).
    """
    n = _whole(n_patients, "n_patients", 1)
    n_codes = _whole(n_codes, "n_codes", 20)
    # two streams: the counts never change which codes are present, so binary=False is
    # binary=True plus visit counts for the same seed
    rng, count_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    world = _World(rng, n_codes)

    age = _ages(rng, n)
    female = rng.random(n) < P_FEMALE
    frailty = rng.standard_normal(n)
    utilisation = None if binary else count_rng.gamma(2.0, 0.5, n) * np.exp(0.3 * frailty)

    indptr_parts = [np.zeros(1, dtype=np.int64)]
    index_parts, data_parts = [], []
    nnz = 0
    for start in range(0, n, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, n)
        rows, cols = world.sample_chunk(rng, age[start:stop], female[start:stop], frailty[start:stop])
        per_row = np.bincount(rows, minlength=stop - start)
        indptr_parts.append(nnz + np.cumsum(per_row))
        index_parts.append(cols.astype(np.int32))
        if binary:
            data_parts.append(np.ones(cols.size, dtype=np.float32))
        else:
            lam = world.visit_rate[cols] * utilisation[start:stop][rows]
            data_parts.append((1 + count_rng.poisson(lam)).astype(np.float32))
        nnz += cols.size
    index_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
    matrix = sp.csr_array(
        (np.concatenate(data_parts), np.concatenate(index_parts).astype(index_dtype, copy=False),
         np.concatenate(indptr_parts).astype(index_dtype)),
        shape=(n, n_codes),
    )
    ids = _patient_ids(n)
    codes = CodeMatrix(matrix, world.vocabulary, ids, binary)
    demographics = pd.DataFrame({
        "patient_id": pd.array(ids, dtype="str"),
        "age": age.astype(np.int64),
        "sex": pd.array(np.where(female, "F", "M"), dtype="str"),
    })
    return codes, demographics


class _World:
    """The vocabulary, clusters and per-code probabilities: depend on ``n_codes`` and the seed only."""

    def __init__(self, rng: np.random.Generator, n_codes: int):
        # categories of 1–9 codes, in vocabulary order
        sizes = rng.integers(1, 10, size=n_codes)  # more than enough categories
        ends = np.cumsum(sizes)
        n_cat = int(np.searchsorted(ends, n_codes) + 1)
        sizes = sizes[:n_cat].copy()
        sizes[-1] -= ends[n_cat - 1] - n_codes
        width = max(3, len(str(n_cat - 1)))
        vocab = []
        for cat, size in enumerate(sizes):
            vocab += [f"D{cat:0{width}d}"] if size == 1 else [f"D{cat:0{width}d}.{s}" for s in range(size)]
        self.vocabulary = tuple(vocab)  # sorted: fixed-width category, one-digit subcode
        category = np.repeat(np.arange(n_cat), sizes)

        # clusters: at least one category each, then ~60 % of the rest
        k = int(np.clip(round(n_codes / 40), 20, 40))
        k = min(k, max(2, n_cat // 3))
        self.n_clusters = k
        cat_cluster = np.full(n_cat, -1, dtype=np.int64)
        perm = rng.permutation(n_cat)
        cat_cluster[perm[:k]] = np.arange(k)
        rest = perm[k:]
        joins = rng.random(rest.size) < P_CLUSTERED_CATEGORY
        cat_cluster[rest[joins]] = rng.integers(0, k, size=int(joins.sum()))
        home = cat_cluster[category]
        self.home = home

        ranks = np.arange(1, k + 1, dtype=float)
        pi = CLUSTER_TOP * ranks**-CLUSTER_ZIPF
        self.cluster_logit = np.log(pi) - np.log1p(-pi)
        self.cluster_age = rng.uniform(0.1, 0.5, size=k)
        self.cluster_sex = np.zeros(k, dtype=np.int64)  # 0 both, 1 female only, 2 male only
        n_special = min(3, k - 2)  # fewer only for tiny vocabularies
        special = rng.choice(np.arange(2, k), size=n_special, replace=False)  # never the two commonest
        self.cluster_sex[special] = [1, 1, 2][:n_special]
        self.cluster_age[special] = [-0.9, 0.3, 0.6][:n_special]

        # emission probability of each clustered code given its cluster is active
        q = np.zeros(n_codes)
        for c in range(k):
            members = np.flatnonzero(home == c)
            r = rng.permutation(members.size) + 1.0
            q[members] = np.maximum(CODE_Q_TOP * r**-CODE_Q_ZIPF, CODE_Q_MIN)
        self.q = q
        self.clustered = np.flatnonzero(home >= 0)
        self.clustered = self.clustered[np.argsort(home[self.clustered], kind="stable")]

        # background: Zipf over a random rank, age slope, sex restrictions
        r = rng.permutation(n_codes) + 1.0
        base = np.maximum(BACKGROUND_TOP * r**-BACKGROUND_ZIPF, BACKGROUND_MIN)
        base = np.where(home >= 0, BACKGROUND_CLUSTERED * base, base)
        gamma = rng.normal(0.25, 0.2, size=n_codes)
        sex_only = np.where(home >= 0, self.cluster_sex[np.maximum(home, 0)], 0)
        u = rng.random(n_codes)
        background_code = home < 0
        sex_only[background_code & (u < P_FEMALE_ONLY_CODE)] = 1
        sex_only[background_code & (u >= P_FEMALE_ONLY_CODE) & (u < P_FEMALE_ONLY_CODE + P_MALE_ONLY_CODE)] = 2
        age_mult = np.exp(np.outer((AGE_BAND_MID - 50.0) / 10.0, gamma))        # bands × codes
        p_band = np.minimum(base * age_mult, BACKGROUND_CAP)
        # groups: band * 2 + female; probability of each code in each group
        self.n_groups = 2 * AGE_BAND_MID.size
        p_group = np.repeat(p_band, 2, axis=0)
        p_group[0::2, sex_only == 1] = 0.0  # male rows: no female-only codes
        p_group[1::2, sex_only == 2] = 0.0  # female rows: no male-only codes
        self.p_group = p_group

        lam_median = np.where(home >= 0, 0.8, 0.3)
        self.visit_rate = lam_median * np.exp(rng.normal(0.0, 0.5, size=n_codes))

    def sample_chunk(self, rng: np.random.Generator, age: np.ndarray, female: np.ndarray,
                     frailty: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, code) of every present code in a chunk, sorted by row then code, no duplicates."""
        m = age.size
        n_codes = self.q.size
        # 1. cluster activation (m × K, small)
        logit = (self.cluster_logit + np.outer((age - 50.0) / 10.0, self.cluster_age)
                 + FRAILTY_SD * frailty[:, None])
        p = 1.0 / (1.0 + np.exp(-logit))
        p[np.ix_(~female, self.cluster_sex == 1)] = 0.0
        p[np.ix_(female, self.cluster_sex == 2)] = 0.0
        active = rng.random(p.shape) < p
        clus, member = np.nonzero(active.T)  # members listed cluster by cluster
        size = np.bincount(clus, minlength=self.n_clusters)
        first = np.concatenate([[0], np.cumsum(size)[:-1]])
        # 2. cluster codes: code j is a Bernoulli(q_j) run over the members of its cluster
        codes = self.clustered
        seg, pos = _bernoulli_runs(rng, size[self.home[codes]], self.q[codes])
        rows_c = member[first[self.home[codes[seg]]] + pos]
        cols_c = codes[seg]
        # 3. background codes: code j is a Bernoulli(p_gj) run over the patients of group g
        band = np.searchsorted(AGE_BAND_EDGES, age, side="right")
        group = 2 * band + female
        order = np.argsort(group, kind="stable")
        g_size = np.bincount(group, minlength=self.n_groups)
        g_first = np.concatenate([[0], np.cumsum(g_size)[:-1]])
        seg, pos = _bernoulli_runs(rng, np.repeat(g_size, n_codes), self.p_group.ravel())
        g, cols_b = np.divmod(seg, n_codes)
        rows_b = order[g_first[g] + pos]
        # 4. union, in CSR order
        keys = np.concatenate([rows_c * n_codes + cols_c, rows_b * n_codes + cols_b])
        keys.sort()
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # a code from both sources once
        return np.divmod(keys, n_codes)


def _bernoulli_runs(rng: np.random.Generator, lengths: np.ndarray, probs: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Successes of independent Bernoulli runs: run ``s`` is ``lengths[s]`` trials with success
    probability ``probs[s]``. Returns ``(run, position)`` of every success.

    Exact: gaps between successes are geometric, drawn for all runs at once (a few more than the
    expected count per run); the few runs not yet past their end continue from their last
    success (the process is memoryless). Work is proportional to the number of successes.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    live = np.flatnonzero((lengths > 0) & (probs > 0))
    start = np.zeros(lengths.size, dtype=np.int64)
    runs, positions = [], []
    while live.size:
        remaining = lengths[live] - start[live]
        p = probs[live]
        mean = remaining * p
        k = np.minimum(np.ceil(mean + 2.0 * np.sqrt(mean) + 1.0).astype(np.int64), remaining)
        run = np.repeat(live, k)
        gaps = rng.geometric(np.repeat(p, k))
        total = np.cumsum(gaps)
        ends = np.cumsum(k)
        before = np.concatenate([[0], total[ends[:-1] - 1]])
        pos = total - np.repeat(before, k) - 1 + np.repeat(start[live], k)
        inside = pos < lengths[run]
        runs.append(run[inside])
        positions.append(pos[inside])
        last = pos[ends - 1]
        more = last < lengths[live] - 1  # all k successes fell inside: the run may hold more
        start[live[more]] = last[more] + 1
        live = live[more]
    if not runs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(runs), np.concatenate(positions)


def _ages(rng: np.random.Generator, n: int) -> np.ndarray:
    lo, hi = AGE_RANGE
    age = rng.normal(AGE_MEAN, AGE_SD, n)
    bad = np.flatnonzero((age < lo) | (age >= hi + 1))
    while bad.size:
        age[bad] = rng.normal(AGE_MEAN, AGE_SD, bad.size)
        bad = bad[(age[bad] < lo) | (age[bad] >= hi + 1)]
    return np.floor(age).astype(np.int64)


def _patient_ids(n: int) -> np.ndarray:
    width = max(6, len(str(n)))
    return np.array([f"P{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be a whole number ≥ {minimum}, got {value!r}")
    return int(value)
