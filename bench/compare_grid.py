"""The benchmark's grid: which synthesizers exist, which datasets and ε each meets, and the cells
(dataset × synthesizer × ε × seed × params) a selection expands to."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from compare_datasets import DATASETS


@dataclass(frozen=True)
class Synthesizer:
    tool: str
    name: str
    dp: bool | None  # None: with and without DP (clinsynth's auto, the default of `clinsynth run`)
    data: tuple[str, ...] = ("table", "codes")  # "codes": the wide EHR table; "long": a table of visits


SYNTHESIZERS: list[Synthesizer] = [
    Synthesizer("clinsynth", "auto", None, ("table", "codes", "long")),  # long: visitchain / dp-visitchain
    Synthesizer("clinsynth", "acgan", False, ("table",)),
    Synthesizer("clinsynth", "medgan", False, ("codes",)),
    Synthesizer("clinsynth", "vae", False),
    Synthesizer("clinsynth", "dp-acgan", True, ("table",)),
    Synthesizer("clinsynth", "dp-medgan", True, ("codes",)),
    Synthesizer("clinsynth", "corgan", False, ("codes",)),
    Synthesizer("clinsynth", "dp-corgan", True, ("codes",)),
    Synthesizer("clinsynth", "dp-vae", True),
    Synthesizer("clinsynth", "bayesnet", False, ("table",)),
    Synthesizer("clinsynth", "dp-bayesnet", True, ("table",)),
    Synthesizer("clinsynth", "codetree", False, ("codes",)),
    Synthesizer("clinsynth", "dp-codetree", True, ("codes",)),
    Synthesizer("sdv", "gaussiancopula", False),
    Synthesizer("sdv", "ctgan", False),
    Synthesizer("sdv", "tvae", False),
    Synthesizer("sdv", "par", False, ("long",)),
    Synthesizer("smartnoise", "aim", True),
    Synthesizer("smartnoise", "mst", True),
    Synthesizer("smartnoise", "dpctgan", True),
    Synthesizer("smartnoise", "patectgan", True),
    Synthesizer("mostlyai", "tabularargn", False, ("table", "codes", "long")),  # long: its sequential mode
    Synthesizer("mostlyai", "dp-tabularargn", True, ("table", "codes", "long")),
]
TOOLS = tuple(dict.fromkeys(s.tool for s in SYNTHESIZERS))


@dataclass(frozen=True)
class Cell:
    dataset: str
    tool: str
    synthesizer: str
    epsilon: float | None
    seed: int
    params: tuple[tuple[str, str], ...] = ()

    @property
    def eps_label(self) -> str:
        return "non-DP" if self.epsilon is None else f"{self.epsilon:g}"

    @property
    def params_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.params)

    @property
    def key(self) -> str:
        return "|".join([self.dataset, f"{self.tool}:{self.synthesizer}", self.eps_label, str(self.seed), self.params_text])

    @property
    def dirname(self) -> str:
        extra = "-" + "-".join(f"{k}{v}" for k, v in self.params) if self.params else ""
        return f"{self.tool}-{self.synthesizer}-eps{self.eps_label}-s{self.seed}{extra}".replace("/", "_").replace(" ", "")

    def with_seed(self, seed: int) -> Cell:
        return Cell(self.dataset, self.tool, self.synthesizer, self.epsilon, seed, self.params)


def build_cells(datasets: Sequence[str], tools: Sequence[str], synthesizers: Sequence[str] | None,
                epsilons: Sequence[float | None], seeds: Sequence[int],
                params: Sequence[tuple[str, str]] = ()) -> list[Cell]:
    """Every cell of the selection, seeds innermost (so seed 0 runs first and can spare the rest).

    ``synthesizers`` filters by name (``ctgan``) or tool:name (``sdv:ctgan``); a synthesizer meets
    only the datasets it models (clinsynth's code models take the EHR table, ``acgan`` the others; the
    long table of visits meets the sequence models: clinsynth's auto, SDV's PAR, mostlyai's sequential mode)."""
    wanted = set(synthesizers or [])
    cells = []
    for name in datasets:
        kind = DATASETS[name].kind
        for s in SYNTHESIZERS:
            if s.tool not in tools or kind not in s.data:
                continue
            if wanted and s.name not in wanted and f"{s.tool}:{s.name}" not in wanted:
                continue
            for eps in (list(epsilons) if s.dp is None else [e for e in epsilons if (e is not None) == s.dp]):
                for seed in sorted(seeds):
                    cells.append(Cell(name, s.tool, s.name, eps, seed, tuple(params)))
    return cells
