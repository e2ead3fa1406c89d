"""Known-answer tests for geo.rates (crude rates, DSRs, Poisson / Wilson limits)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from geo.rates import (
    age_standardised_rates,
    byars_limits,
    crude_rate,
    dsr_from_bands,
    esp2013_band,
    exact_poisson_limits,
    poisson_limits,
    wilson_limits,
    with_crude_rate,
)
from geo.reference import load_esp2013

ESP = load_esp2013()["esp2013_population"].to_numpy()


def test_esp2013_is_the_19_band_standard():
    assert ESP.tolist()[:3] == [5000, 5500, 5500]
    assert ESP[-1] == 1000 and ESP.sum() == 100_000 and len(ESP) == 19


def test_dsr_matches_pheindicatormethods_worked_example():
    """PHEindicatormethods DSR vignette, section "Zero deaths for a specific age band within a
    small geography": pops2 / deaths2 (no deaths at ages 10-24), ``phe_dsr(df3, dths, pop)``
    with ESP 2013, 95% confidence, per 100,000 prints ``value 8283.016, lowercl 6570.819,
    uppercl 10289.65`` (ukhsa-collaboration/PHEindicatormethods, inst/doc/DSR-vignette.html,
    commit 423d2627e3698400e522e53c217bbc9d1efcba7e). Dobson method with Byar's limits."""
    pop = [30, 35, 35, 35, 40, 40, 45, 50, 50, 50, 60, 60, 70, 75, 70, 60, 20, 20, 15]
    deaths_by_age = {0: 1, 5: 1, 25: 1, 30: 1, 35: 3, 40: 3, 45: 3, 50: 3, 55: 10, 60: 10}
    deaths_by_age |= {65: 10, 70: 10, 75: 8, 80: 8, 85: 8, 90: 8}
    deaths = [deaths_by_age.get(a, 0) for a in range(0, 95, 5)]
    value, lower, upper = dsr_from_bands(deaths, pop, ESP, multiplier=100_000)
    assert value == pytest.approx(8283.016, abs=0.001)
    assert lower == pytest.approx(6570.819, abs=0.001)
    assert upper == pytest.approx(10289.65, abs=0.01)

    # same through the vectorised polars path, alongside a second group
    strata = pl.DataFrame(
        {
            "area": ["x"] * 19 + ["y"] * 19,
            "band": list(range(19)) * 2,
            "population": pop + [1000] * 19,
            "deaths": deaths + [10] * 19,
        }
    )
    out = age_standardised_rates(
        strata, ["area"], {"deaths": ("dsr", "lcl", "ucl")}, multiplier=100_000
    )
    x = out.filter(pl.col("area") == "x").row(0, named=True)
    assert (x["dsr"], x["lcl"], x["ucl"]) == pytest.approx((value, lower, upper), rel=1e-12)
    y = out.filter(pl.col("area") == "y").row(0, named=True)
    assert y["dsr"] == pytest.approx(1000.0)  # 10 per 1,000 in every band


def test_dsr_hand_calculation_with_missing_bands():
    """Hand calculation: 1,000 people in bands 0-4 and 90+ only, 10 and 20 events.

    DSR = (5000 × 10/1000 + 1000 × 20/1000) / 100000 × 1000 = 0.7 per 1,000.
    var = (5000² × 10/1000² + 1000² × 20/1000²) / 100000² = 270 / 1e10.
    O = 30 → Byar's limits; DSR ± sqrt(var / O) × (O_limit - O) × 1000."""
    strata = pl.DataFrame({"g": ["a", "a"], "band": [0, 18], "n": [1000, 1000], "x": [10, 20]})
    out = age_standardised_rates(strata, ["g"], {"x": ("d", "l", "u")}, population="n")
    row = out.row(0, named=True)
    assert row["d"] == pytest.approx(0.7)
    z = 1.959963984540054
    o_lo = 30 * (1 - 1 / 270 - z / (3 * math.sqrt(30))) ** 3
    o_up = 31 * (1 - 1 / 279 + z / (3 * math.sqrt(31))) ** 3
    k = math.sqrt(270 / 1e10 / 30)
    assert row["l"] == pytest.approx((0.7e-3 + k * (o_lo - 30)) * 1000, rel=1e-12)
    assert row["u"] == pytest.approx((0.7e-3 + k * (o_up - 30)) * 1000, rel=1e-12)


def test_dsr_of_zero_events():
    d, lo, up = dsr_from_bands(np.zeros(19), np.full(19, 100), ESP)
    assert d == 0 and lo == 0 and math.isnan(up)


def test_byars_limits_known_values():
    """Byar's approximation is within 0.2% of the exact Poisson limits for counts of 10 or
    more (OHID Technical Guide: Confidence Intervals). Exact 95% limits for 10 events from
    standard Poisson tables (Garwood 1936): 4.7954 and 18.3904."""
    lo, up = byars_limits([10])
    assert lo[0] == pytest.approx(4.7954, rel=0.002)
    assert up[0] == pytest.approx(18.3904, rel=0.002)
    # and against scipy's exact limits across a range of counts
    o = np.arange(10, 400)
    blo, bup = byars_limits(o)
    elo, eup = exact_poisson_limits(o)
    assert np.all(np.abs(blo / elo - 1) < 0.002) and np.all(np.abs(bup / eup - 1) < 0.002)


def test_exact_limits_below_ten_events():
    """Exact (chi-squared) 95% limits from standard Poisson tables: 0 → (0, 3.689),
    1 → (0.0253, 5.5716), 5 → (1.6235, 11.6683)."""
    lo, up = poisson_limits([0, 1, 5])
    assert lo == pytest.approx([0, 0.0253, 1.6235], abs=1e-4)
    assert up == pytest.approx([3.6889, 5.5716, 11.6683], abs=1e-4)


def test_crude_rate_with_byar_interval():
    """65 events in 10,000 people: 6.5 per 1,000. Byar's limits of 65 by the OHID formula
    (z = 1.959964): 65 (1 - 1/585 - z/(3√65))³ = 50.1632 and 66 (1 - 1/594 + z/(3√66))³ =
    82.8491, so 5.016 to 8.285 per 1,000."""
    rate, lo, up = crude_rate([65], [10_000], multiplier=1000)
    assert rate[0] == pytest.approx(6.5)
    assert lo[0] == pytest.approx(5.01632, abs=1e-5)
    assert up[0] == pytest.approx(8.28491, abs=1e-5)
    df = with_crude_rate(pl.DataFrame({"x": [65, 0], "n": [10_000, 0]}), "x", "n", ("r", "l", "u"))
    assert df["r"][0] == pytest.approx(6.5)
    assert df["r"][1] is None  # no population, no rate


def test_wilson_interval_known_value():
    """Newcombe RG. Two-sided confidence intervals for the single proportion. Stat Med
    1998;17:857-72, Table I: 81/263, Wilson score interval 0.2553 to 0.3662."""
    p, lo, up = wilson_limits([81], [263])
    assert p[0] == pytest.approx(81 / 263)
    assert lo[0] == pytest.approx(0.2553, abs=1e-4)
    assert up[0] == pytest.approx(0.3662, abs=1e-4)


def test_esp2013_band_of_age():
    df = pl.DataFrame({"age": [0, 4, 5, 89, 90, 104, None]})
    bands = df.select(esp2013_band(pl.col("age")).alias("band"))["band"].to_list()
    assert bands == [0, 0, 1, 17, 18, 18, None]


def test_negative_counts_rejected():
    with pytest.raises(ValueError):
        poisson_limits([-1])
