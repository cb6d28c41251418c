"""Score distributions and drift: did a reward (or a judge) score differently in one run than in another?

A reward function, a reward model or a judge is an instrument; when its scores move between two runs of
the same kind, either the policy changed what it writes, or the instrument changed (a new reward
version, a judge swapped, a prompt template edited). `drift(a, b)` says whether the two samples of
scores come from different distributions, with two standard measures:

- the two-sample Kolmogorov-Smirnov statistic D = max |F_a(x) - F_b(x)| and its asymptotic p-value
  (Kolmogorov's distribution with Stephens' small-sample correction; Numerical Recipes §14.3): is the
  difference more than sampling noise?
- the population stability index PSI = Σ (p_b - p_a) ln(p_b / p_a) over bins cut at a's quantiles:
  is it large enough to matter? (Industry's reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted.)

A distribution is flagged `moved` when the difference is both significant (p < alpha) and material
(PSI ≥ min_psi): a huge sample makes any tiny shift significant, a tiny one makes PSI noisy.

    report = drift(run_a_rewards, run_b_rewards, name="reward")
    report.moved, report.ks, report.p_value, report.psi
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std (population), min, p05, p25, p50, p75, p95 and max of the finite values
    ({"n": 0} when there are none)."""
    xs = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    n = len(xs)
    if not n:
        return {"n": 0}
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)
    out = {"n": n, "mean": mean, "std": std, "min": xs[0]}
    for q in (5, 25, 50, 75, 95):
        out[f"p{q:02d}"] = quantile(xs, q / 100)
    out["max"] = xs[-1]
    return out


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0 ≤ q ≤ 1) of already sorted values, linearly interpolated (numpy's default)."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def ks_2samp(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(D, p-value) of the two-sample Kolmogorov-Smirnov test; ties are handled (D is taken after every
    copy of a value). The p-value is asymptotic: fine from a few dozen values per sample."""
    xa, xb = sorted(a), sorted(b)
    n, m = len(xa), len(xb)
    if not n or not m:
        return math.nan, math.nan
    i = j = 0
    d = 0.0
    while i < n and j < m:
        x = min(xa[i], xb[j])
        while i < n and xa[i] == x:
            i += 1
        while j < m and xb[j] == x:
            j += 1
        d = max(d, abs(i / n - j / m))
    ne = n * m / (n + m)
    return d, _kolmogorov_sf((math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d)


def _kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for Kolmogorov's distribution: 2 Σ_{k≥1} (-1)^{k-1} exp(-2 k² lam²)."""
    if lam < 1e-3:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = sign * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
        sign = -sign
    return min(max(2.0 * total, 0.0), 1.0)


def psi(a: Sequence[float], b: Sequence[float], bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of b against a, on up to `bins` bins cut at a's quantiles (repeated
    cut points, from discrete scores such as 0/1 rewards, are merged). Empty bins count as `eps`."""
    xa, xb = sorted(a), sorted(b)
    if not xa or not xb:
        return math.nan
    cuts = sorted({quantile(xa, k / bins) for k in range(1, bins)})

    def shares(xs: list[float]) -> list[float]:
        counts = [0] * (len(cuts) + 1)
        for x in xs:
            counts[_bin(cuts, x)] += 1
        return [max(c / len(xs), eps) for c in counts]

    pa, pb = shares(xa), shares(xb)
    return sum((q - p) * math.log(q / p) for p, q in zip(pa, pb))


def _bin(cuts: list[float], x: float) -> int:
    """Index of the bin holding x: bins are (-inf, c0], (c0, c1], …, (c_last, inf)."""
    lo, hi = 0, len(cuts)
    while lo < hi:
        mid = (lo + hi) // 2
        if x <= cuts[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Whether one score's distribution moved between run A and run B, and by how much."""

    name: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    ks: float          # Kolmogorov-Smirnov D, 0 (same) … 1 (disjoint)
    p_value: float     # of D under "same distribution"
    psi: float         # population stability index of B against A
    moved: bool

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        flag = "MOVED" if self.moved else "stable"
        return (f"{self.name:28s} {flag:6s} mean {self.mean_a:.4g} -> {self.mean_b:.4g}  KS {self.ks:.3f} "
                f"(p {self.p_value:.2g})  PSI {self.psi:.3f}  n {self.n_a}/{self.n_b}")


def drift(a: Sequence[float], b: Sequence[float], *, name: str = "score", alpha: float = 0.01,
          min_psi: float = 0.1, bins: int = 10) -> DriftReport:
    """Compare the score samples of two runs: KS test and PSI; `moved` when p < alpha and PSI ≥ min_psi.

    None and non-finite values are left out.

    Example:
        drift([0, 1, 1, 0] * 50, [1, 1, 1, 0] * 50, name="correctness").moved   # True
    """
    xa = [float(v) for v in a if v is not None and math.isfinite(float(v))]
    xb = [float(v) for v in b if v is not None and math.isfinite(float(v))]
    d, p = ks_2samp(xa, xb)
    index = psi(xa, xb, bins)
    moved = bool(xa and xb and p < alpha and index >= min_psi)
    return DriftReport(name, len(xa), len(xb), _mean(xa), _mean(xb), d, p, index, moved)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def compare_scores(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], **kwargs: Any
                   ) -> list[DriftReport]:
    """`drift` for every score name the two runs share (sorted by name); kwargs go to `drift`."""
    return [drift(a[k], b[k], name=k, **kwargs) for k in sorted(set(a) & set(b))]
