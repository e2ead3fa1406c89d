"""Rates, proportions and their confidence intervals, the OHID (formerly PHE) way.

Methods (OHID "Public health technical guidance": Confidence intervals; Rates; Directly
standardised rates — fingertips.phe.org.uk/static-reports/public-health-technical-guidance;
and the reference implementation, the R package PHEindicatormethods, ukhsa-collaboration):

* **Poisson limits of a count O** — Byar's approximation for O >= 10 (Breslow NE, Day NE.
  *Statistical methods in cancer research, vol. II*. IARC 1987)::

      O_lower = O (1 - 1/(9 O) - z / (3 sqrt(O)))^3
      O_upper = (O + 1) (1 - 1/(9 (O + 1)) + z / (3 sqrt(O + 1)))^3

  and the exact chi-squared limits for O < 10 (Armitage P, Berry G. *Statistical methods in
  medical research*, 4th edn, 2002): ``chi2(alpha/2, 2 O) / 2`` and
  ``chi2(1 - alpha/2, 2 O + 2) / 2``, lower = 0 when O = 0. This is ``phe_rate``'s rule.
* **Crude rate** r = O / n × multiplier; limits = Poisson limits of O / n × multiplier.
* **Directly standardised rate** (DSR) over the 19 five-year ESP 2013 bands, with
  w_i the standard population, O_i / n_i the band's events and population::

      DSR = sum(w_i O_i / n_i) / sum(w_i) × multiplier
      var(DSR) = sum(w_i^2 O_i / n_i^2) / (sum w_i)^2
      DSR_lower/upper = DSR + sqrt(var(DSR) / O) (O_lower/upper - O) × multiplier

  i.e. Dobson AJ, Kuulasmaa K, Eberle E, Scherer J. Confidence intervals for weighted sums
  of Poisson parameters. *Stat Med* 1991;10:457-62, with the limits of the total count O
  by Byar's method, as in PHEindicatormethods ``phe_dsr`` / ``calculate_dsr``. OHID does not
  publish a DSR on fewer than 10 events; here it is still computed (limits of O exact for
  O < 10) for the internal tables; the published tables compute it from per-band counts
  rounded to 5 and suppress it through :func:`phm.disclosure.protect_rate`. A band with no population contributes nothing (its
  rate is undefined; with no population it can have no events either). With O = 0 the DSR
  is 0, its lower limit 0 and its upper limit undefined (null).
* **Proportion** p = x / n with the Wilson score interval (Wilson EB. *J Am Stat Assoc*
  1927;22:209-12), OHID's method for proportions.

Everything is vectorised over numpy arrays; the polars wrappers add columns to a frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from scipy import stats

from geo.reference import load_esp2013

#: counts below this use exact Poisson limits instead of Byar's (OHID / phe_rate)
EXACT_BELOW = 10
#: ESP 2013 band index of an age: 0-4 -> 0 ... 85-89 -> 17, 90+ -> 18
N_BANDS = 19


def z_value(confidence: float = 0.95) -> float:
    """The two-sided normal quantile: 1.959964 for 95%."""
    if not 0.5 < confidence < 1:
        raise ValueError("confidence must be between 0.5 and 1, e.g. 0.95")
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _as_float(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if np.any(a[~np.isnan(a)] < 0):
        raise ValueError("counts must be >= 0")
    return a


def byars_limits(observed, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Byar's lower and upper limits of Poisson counts (lower = 0 where O = 0)."""
    o = _as_float(observed)
    z = z_value(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = o * (1 - 1 / (9 * o) - z / (3 * np.sqrt(o))) ** 3
    lower = np.where(o == 0, 0.0, lower)
    upper = (o + 1) * (1 - 1 / (9 * (o + 1)) + z / (3 * np.sqrt(o + 1))) ** 3
    return lower, upper


def exact_poisson_limits(observed, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (chi-squared) limits of Poisson counts."""
    o = _as_float(observed)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        lower = np.where(o > 0, stats.chi2.ppf(alpha / 2, 2 * o) / 2, 0.0)
    upper = stats.chi2.ppf(1 - alpha / 2, 2 * o + 2) / 2
    return lower, upper


def poisson_limits(
    observed, confidence: float = 0.95, exact_below: int = EXACT_BELOW
) -> tuple[np.ndarray, np.ndarray]:
    """OHID rule: exact limits for counts below ``exact_below`` (10), Byar's otherwise."""
    o = _as_float(observed)
    bl, bu = byars_limits(o, confidence)
    el, eu = exact_poisson_limits(o, confidence)
    small = o < exact_below
    return np.where(small, el, bl), np.where(small, eu, bu)


def crude_rate(
    events, population, multiplier: float = 1000, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rate per ``multiplier`` and its limits; null (nan) where the population is 0."""
    o = _as_float(events)
    n = np.asarray(population, dtype=float)
    lo, up = poisson_limits(o, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(n > 0, multiplier / n, np.nan)
    return o * scale, lo * scale, up * scale


def wilson_limits(
    numerator, denominator, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proportion and Wilson score limits (as fractions); nan where the denominator is 0."""
    x = _as_float(numerator)
    n = np.asarray(denominator, dtype=float)
    z = z_value(confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / n
        centre = 2 * x + z**2
        half = z * np.sqrt(z**2 + 4 * x * (1 - p))
        denom = 2 * (n + z**2)
        lower = (centre - half) / denom
        upper = (centre + half) / denom
    bad = ~(n > 0)
    return (np.where(bad, np.nan, p), np.where(bad, np.nan, lower), np.where(bad, np.nan, upper))


def dobson_dsr(
    weighted_rate_sum,
    weighted_variance_sum,
    total_events,
    total_weight: float,
    multiplier: float = 1000,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DSR and Dobson limits from the per-group sums ``sum(w O / n)``, ``sum(w^2 O / n^2)``
    and ``O = sum(O_i)``; ``total_weight`` = sum of the standard population."""
    s1 = np.asarray(weighted_rate_sum, dtype=float)
    s2 = np.asarray(weighted_variance_sum, dtype=float)
    o = _as_float(total_events)
    dsr = s1 / total_weight
    var = s2 / total_weight**2
    o_lo, o_up = poisson_limits(o, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.sqrt(var / o)
    lower = np.where(o > 0, dsr + k * (o_lo - o), 0.0)
    upper = np.where(o > 0, dsr + k * (o_up - o), np.nan)
    return dsr * multiplier, lower * multiplier, upper * multiplier


def dsr_from_bands(
    events, population, standard, multiplier: float = 1000, confidence: float = 0.95
) -> tuple[float, float, float]:
    """One DSR from per-band arrays (in the same band order as ``standard``)."""
    x = _as_float(events)
    n = np.asarray(population, dtype=float)
    w = np.asarray(standard, dtype=float)
    if not (x.shape == n.shape == w.shape):
        raise ValueError("events, population and standard must have one value per band")
    if np.any((n == 0) & (x > 0)):
        raise ValueError("a band with events must have a population")
    safe = np.where(n > 0, n, 1.0)
    s1 = np.sum(np.where(n > 0, w * x / safe, 0.0))
    s2 = np.sum(np.where(n > 0, w**2 * x / safe**2, 0.0))
    d, lo, up = dobson_dsr(s1, s2, x.sum(), w.sum(), multiplier, confidence)
    return float(d), float(lo), float(up)


# --------------------------------------------------------------------------- polars API


def esp2013_band(age: pl.Expr) -> pl.Expr:
    """ESP 2013 band index (0 = 0-4 ... 18 = 90+) of an age in whole years; null stays null."""
    band = pl.min_horizontal(age.cast(pl.Int32) // 5, pl.lit(N_BANDS - 1))
    return pl.when(age.is_null()).then(None).otherwise(band).cast(pl.Int32)


def with_crude_rate(
    df: pl.DataFrame,
    events: str,
    population: str,
    names: tuple[str, str, str],
    multiplier: float = 1000,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """Add crude rate, lower and upper limit columns named ``names``."""
    r, lo, up = crude_rate(
        df[events].fill_null(0).to_numpy(),
        df[population].fill_null(0).to_numpy(),
        multiplier,
        confidence,
    )
    return df.with_columns(
        pl.Series(n, v, dtype=pl.Float64, nan_to_null=True)
        for n, v in zip(names, (r, lo, up), strict=True)
    )


def with_proportion(
    df: pl.DataFrame,
    numerator: str,
    denominator: str,
    names: tuple[str, str, str],
    multiplier: float = 100,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """Add proportion (× ``multiplier``, default percent) and Wilson limits named ``names``."""
    p, lo, up = wilson_limits(
        df[numerator].fill_null(0).to_numpy(), df[denominator].fill_null(0).to_numpy(), confidence
    )
    return df.with_columns(
        pl.Series(n, v * multiplier, dtype=pl.Float64, nan_to_null=True)
        for n, v in zip(names, (p, lo, up), strict=True)
    )


def age_standardised_rates(
    strata: pl.DataFrame,
    by: Sequence[str],
    events: dict[str, tuple[str, str, str]],
    population: str = "population",
    band: str = "band",
    standard: pl.DataFrame | None = None,
    multiplier: float = 1000,
    confidence: float = 0.95,
) -> pl.DataFrame:
    """DSRs with Dobson limits, one row per group of ``by``.

    ``strata`` has one row per group and age band (band index 0..18, see
    :func:`esp2013_band`) with the band ``population`` and one column per event count;
    missing bands count as population 0. ``events`` maps each event column to the names of
    its (DSR, lower, upper) output columns. ``standard`` defaults to ESP 2013
    (``band, esp2013_population``). Rows come out sorted by ``by`` (nulls first).
    """
    std = (standard if standard is not None else load_esp2013()).select(
        pl.col("band").cast(pl.Int32), pl.col("esp2013_population").cast(pl.Float64).alias("_w")
    )
    total_weight = float(std["_w"].sum())
    by = list(by)
    # in the strata's order: the float sums below are then the same on every run
    data = strata.with_columns(pl.col(band).cast(pl.Int32).alias("band")).join(
        std, on="band", how="left", maintain_order="left"
    )
    if data["_w"].null_count():
        raise ValueError("strata contain an age band that is not in the standard population")
    n = pl.col(population).cast(pl.Float64)
    aggs = []
    for e in events:
        x = pl.col(e).fill_null(0).cast(pl.Float64)
        rate = pl.when(n > 0).then(x / n).otherwise(0.0)
        var = pl.when(n > 0).then(x / n.pow(2)).otherwise(0.0)
        aggs += [
            (pl.col("_w") * rate).sum().alias(f"_s1_{e}"),
            (pl.col("_w").pow(2) * var).sum().alias(f"_s2_{e}"),
            x.sum().alias(f"_o_{e}"),
        ]
    g = data.group_by(by).agg(aggs).sort(by, nulls_last=False)
    out = g.select(by)
    for e, names in events.items():
        d, lo, up = dobson_dsr(
            g[f"_s1_{e}"].to_numpy(),
            g[f"_s2_{e}"].to_numpy(),
            g[f"_o_{e}"].to_numpy(),
            total_weight,
            multiplier,
            confidence,
        )
        out = out.with_columns(
            pl.Series(nm, v, dtype=pl.Float64, nan_to_null=True)
            for nm, v in zip(names, (d, lo, up), strict=True)
        )
    return out
