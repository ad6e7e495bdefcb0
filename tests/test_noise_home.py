"""Privacy noise is drawn in ``clinsynth.privacy`` and nowhere else (issue 23: one home for noise).

A reviewer audits the guarantee by reading one package: every mechanism there charges the ledger
and adds its noise in the same call. This test reads the source of every other module (an AST
scan, no import) and fails on any call that draws from a noise distribution — Gaussian, Laplace,
Gumbel, exponential, logistic, geometric, by numpy, torch or scipy — or builds Gumbel noise by its
inverse CDF (``log(-log(u))``), unless the function it sits in is on :data:`ALLOWED` below with the
reason its randomness is not privacy noise. A new draw in a model or in ``selection.py`` fails
here: move it into a mechanism of ``clinsynth.privacy`` (or, if it is not privacy noise, add it to
the list with its reason, for a reviewer to judge).

What it cannot see: noise built from uniforms some other way, or a draw reached through
``getattr``. It is a guard against the ordinary way of writing a draw, not a proof.
"""
from __future__ import annotations

import ast
from pathlib import Path

import clinsynth

SRC = Path(clinsynth.__file__).parent
#: draws from a noise distribution, by the name of the function or method called
NOISE_DRAWS = frozenset({
    "normal", "normal_", "standard_normal", "multivariate_normal", "randn", "randn_like",  # Gaussian
    "laplace", "gumbel", "gumbel_softmax", "logistic", "exponential", "exponential_", "standard_exponential",
    "geometric", "standard_cauchy", "rvs",  # scipy.stats distributions
    "Normal", "Laplace", "Gumbel", "Exponential",  # torch.distributions
})
WILDCARD = "*"

#: (module under clinsynth/, function qualname or "*") → why its randomness is not privacy noise
ALLOWED: dict[tuple[str, str], str] = {
    # simulators make up data from published summary figures; they read no record
    ("data/datasets.py", WILDCARD): "the simulated trial",
    ("data/ehr_simulator.py", WILDCARD): "the simulated EHR",
    ("data/long_trial.py", WILDCARD): "the simulated long-format trial",
    # a generator's latent noise: the input of a network, not a perturbation of anything measured
    ("models/acgan.py", "ACGAN._fake"): "AC-GAN latent noise for fake training records",
    ("models/acgan.py", "ACGAN._sample"): "AC-GAN latent noise when sampling synthetic records",
    ("models/vae.py", "VAE._generate"): "VAE prior draws when sampling",
    ("models/vae.py", "VAE._training_latents"): "the training patients' latents, reparameterised as in training, for "
                                                "the latent mixture (without DP only: refused under DP)",
    ("models/latent_prior.py", "LatentPrior.sample"): "latents from the prior (N(0, I) or the mixture): the VAE's new "
                                                      "patients, medGAN's generator noise",
    ("models/vae.py", "VAENet.forward"): "VAE reparameterisation (the model's own sampling; DP-SGD makes its training private)",
    ("models/visitrnn.py", "VisitNet.forward"): "the patient VAE's reparameterisation (DP-SGD makes training private)",
    ("models/visitrnn.py", "VisitRNN._sample_chunk"): "the patient VAE's prior draws when sampling",
    ("models/visitrnn.py", "VisitCodec.draw"): "a visit's numbers drawn from the model's own Gaussians when sampling",
    # drawing categories from a generator's logits
    ("models/training.py", "SpanActivation.__call__"): "Gumbel-softmax relaxation of generated categories while training",
    ("models/training.py", "CategoricalNoise.__call__"): "Gumbel-max draws of synthetic categories from generated logits",
}


def _called_name(call: ast.Call) -> str | None:
    fn = call.func
    return fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None


def _is_gumbel_inverse_cdf(call: ast.Call) -> bool:
    """``log(-log(u))``: Gumbel noise from a uniform."""
    if _called_name(call) != "log" or len(call.args) != 1:
        return False
    arg = call.args[0]
    return isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.USub) and isinstance(arg.operand, ast.Call) \
        and _called_name(arg.operand) == "log"


def noise_draws(source: str) -> list[tuple[str, str, int]]:
    """(enclosing function qualname, what is drawn, line) of each noise draw in ``source``."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call):
                name = _called_name(child)
                if name in NOISE_DRAWS:
                    found.append((".".join(scope) or "<module>", name, child.lineno))
                elif _is_gumbel_inverse_cdf(child):
                    found.append((".".join(scope) or "<module>", "gumbel (log(-log(u)))", child.lineno))
            visit(child, scope)

    visit(ast.parse(source), [])
    return found


def _draws_outside_privacy() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        if module.startswith("privacy/"):
            continue
        for scope, name, line in noise_draws(path.read_text(encoding="utf-8")):
            out.setdefault((module, scope), []).append(f"{name} (line {line})")
    return out


def _allowed(module: str, scope: str) -> bool:
    return (module, scope) in ALLOWED or (module, WILDCARD) in ALLOWED


def test_no_module_outside_privacy_draws_noise():
    stray = {f"{m}: {s}": draws for (m, s), draws in _draws_outside_privacy().items() if not _allowed(m, s)}
    assert not stray, ("noise drawn outside clinsynth/privacy — use a mechanism of clinsynth.privacy (it charges "
                       f"the ledger and adds the noise in one call), or allow it in this test with its reason: {stray}")


def test_every_allowed_entry_still_draws():
    """A stale entry would let a later draw in that function through unexamined."""
    found = _draws_outside_privacy()
    stale = [key for key in ALLOWED if not any(m == key[0] and (key[1] == WILDCARD or s == key[1]) for m, s in found)]
    assert not stale, f"allowed but no longer drawing noise (remove them): {stale}"


def test_the_scan_sees_the_ways_a_draw_is_written():
    source = '''
import numpy as np, torch
def numpy_gaussian(rng, x):
    return x + rng.normal(0.0, 1.0, size=x.shape)
class Model:
    def scores(self, s):
        return s + np.random.laplace(0, 1, s.size)
    def top(self, s, g):
        return (s - torch.log(-torch.log(torch.rand(s.shape, generator=g)))).argmax()
def torch_gaussian(x):
    return x + torch.randn_like(x)
def fine(rng, n):
    return rng.permutation(n), rng.choice(n, 3), rng.random(n)
'''
    assert [(s, n) for s, n, _ in noise_draws(source)] == [
        ("numpy_gaussian", "normal"), ("Model.scores", "laplace"), ("Model.top", "gumbel (log(-log(u)))"),
        ("torch_gaussian", "randn_like")]
