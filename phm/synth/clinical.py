"""Long-term conditions and frailty deficits: who has what, from when.

Lifetime risk of each condition is a logistic function of deprivation, sex, ethnicity, a
latent general-health factor (which clusters conditions: multimorbidity), smoking, BMI and
"parent" conditions (e.g. diabetes -> CKD/CHD). The age at onset follows a logistic curve
whose midpoint moves earlier with deprivation (``dep_shift`` years in the most deprived
decile; Barnett et al., Lancet 2012, found multimorbidity 10-15 years earlier there), so
prevalence rises with age and deprivation. Some conditions resolve (and may relapse).
Frailty deficits (eFI; Clegg et al., Age Ageing 2016) accumulate with age and conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phm.synth._util import NEVER, YEAR, logistic, uniform_days
from phm.synth.population import Demography


@dataclass
class RiskFactors:
    z: np.ndarray  # latent general-health factor (higher = sicker)
    smoking: np.ndarray  # 0 never, 1 ex, 2 current
    bmi: np.ndarray
    height_m: np.ndarray
    engagement_z: np.ndarray  # latent engagement (higher = less engaged)

    def subset(self, idx: np.ndarray) -> RiskFactors:
        return RiskFactors(**{k: v[idx] for k, v in self.__dict__.items()})


def make_risk_factors(
    rng: np.random.Generator, dem: Demography, params: dict, extract_day: int
) -> RiskFactors:
    r = params["risk"]
    n = len(dem.dob)
    age = (extract_day - dem.dob) / YEAR
    female = dem.sex == "F"
    z = rng.normal(0, r["latent_sd"], n)
    base = r["smoking_dep_logit"] * dem.dep + r["smoking_male_logit"] * (~female)
    base = base + r["smoking_south_asian_female_logit"] * (dem.south_asian & female)
    p_cur = logistic(r["smoking_current_logit"] + base)
    p_ex = logistic(r["smoking_ex_logit"] + base + 0.02 * (age - 40))
    u = rng.random(n)
    smoking = np.where(u < p_cur, 2, np.where(u < p_cur + (1 - p_cur) * p_ex, 1, 0)).astype(np.int8)
    smoking[age < 14] = 0
    adult_age = np.clip(age, 18, 65) - 18
    bmi = (
        r["bmi_mean"]
        - 2.5
        + r["bmi_age_slope"] * adult_age
        + r["bmi_dep"] * dem.dep
        + 0.8 * z
        + rng.normal(0, r["bmi_sd"], n)
    )
    child = age < 18
    bmi = np.where(child, 15.5 + 0.45 * np.clip(age, 0, 18) + rng.normal(0, 2.0, n), bmi)
    bmi = np.clip(bmi, 13.0, 60.0)
    adult_h = np.where(female, 1.62, 1.76) - 0.03 * dem.south_asian + rng.normal(0, 0.07, n)
    child_h = 0.5 + 0.065 * np.clip(age, 0, 18) + rng.normal(0, 0.05, n)
    height = np.where(child, child_h, adult_h)
    engagement_z = rng.normal(0, 1, n)
    return RiskFactors(z, smoking, bmi, np.clip(height, 0.45, 2.1), engagement_z)


@dataclass
class Conditions:
    keys: list[str]
    onset: np.ndarray  # (n, K) int32 day, NEVER = none
    res: np.ndarray  # (n, K) resolved day
    relapse: np.ndarray  # (n, K) re-diagnosed day after resolution
    efi_of: list[str | None]  # eFI deficit each condition counts as
    emergency_rr: np.ndarray  # (K,) log rate ratios
    death_rr: np.ndarray

    def subset(self, idx: np.ndarray) -> Conditions:
        return Conditions(
            self.keys,
            self.onset[idx],
            self.res[idx],
            self.relapse[idx],
            self.efi_of,
            self.emergency_rr,
            self.death_rr,
        )

    def index(self, key: str) -> int:
        return self.keys.index(key)

    def active(self, t: np.ndarray | int, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, K) conditions active at day ``t`` (scalar or per row). Scalar-day results for
        the whole population are memoised (treat them as read-only)."""
        if rows is None and np.ndim(t) == 0:
            memo = self.__dict__.setdefault("_memo", {})
            key = int(t)
            if key not in memo:
                memo[key] = self._active(t, None)
                memo[key].flags.writeable = False
            return memo[key]
        return self._active(t, rows)

    def _active(self, t: np.ndarray | int, rows: np.ndarray | None) -> np.ndarray:
        on, rs, rl = (
            (self.onset, self.res, self.relapse)
            if rows is None
            else (
                self.onset[rows],
                self.res[rows],
                self.relapse[rows],
            )
        )
        tt = np.asarray(t)
        if tt.ndim == 1:
            tt = tt[:, None]
        return (on <= tt) & ~((rs <= tt) & (rl > tt))

    def ever(self, t: int) -> np.ndarray:
        return self.onset <= t

    def efi_condition_deficits(self, active: np.ndarray) -> np.ndarray:
        """Distinct eFI deficits implied by the active conditions, per row."""
        groups: dict[str, list[int]] = {}
        for k, e in enumerate(self.efi_of):
            if e:
                groups.setdefault(e, []).append(k)
        total = np.zeros(active.shape[0], dtype=np.int32)
        for cols in groups.values():
            total += active[:, cols].any(axis=1)
        return total


def simulate_conditions(
    rng: np.random.Generator, dem: Demography, rf: RiskFactors, params: dict, extract_day: int
) -> Conditions:
    cp = params["conditions"]
    keys = list(cp)
    n, k = len(dem.dob), len(keys)
    female = dem.sex == "F"
    onset = np.full((n, k), NEVER, dtype=np.int32)
    res = np.full((n, k), NEVER, dtype=np.int32)
    relapse = np.full((n, k), NEVER, dtype=np.int32)
    ever_smoker = rf.smoking > 0
    age_e = (extract_day - dem.dob) / YEAR
    calib = slice(0, min(n, 60_000))  # the pool is in random order: a prefix is a sample
    for j, key in enumerate(keys):
        c = cp[key]
        lp = np.zeros(n)
        lp += c.get("load", 0.0) * rf.z
        lp += c.get("dep_logit", 0.0) * dem.dep
        lp += c.get("sex_f", 0.0) * female
        eth = c.get("eth", {})
        lp += eth.get("south_asian", 0.0) * dem.south_asian + eth.get("black", 0.0) * dem.black
        lp += c.get("smoking", 0.0) * ever_smoker
        lp += c.get("bmi", 0.0) * (rf.bmi - 25.0)
        for parent, beta in (c.get("parents") or {}).items():
            pj = keys.index(parent)
            if pj >= j:
                raise ValueError(f"condition {key}: parent {parent} must come earlier")
            lp += beta * (onset[:, pj] <= extract_day)
        # P(onset by now | ever) from the onset-age curve; solve the intercept for the target
        z_age = (age_e[calib] - c["mid"] + c.get("dep_shift", 0.0) * dem.dep[calib]) / c["scale"]
        reached = logistic(z_age) * (age_e[calib] >= c["min_age"])
        lp += _solve_intercept(lp[calib], reached, float(c["prevalence"]))
        p = logistic(lp)
        u = rng.random(n) * 1.0
        has = u < p
        r = np.clip(u / np.maximum(p, 1e-12), 1e-9, 1 - 1e-9)
        age_on = c["mid"] - c.get("dep_shift", 0.0) * dem.dep + c["scale"] * np.log(r / (1 - r))
        early = age_on < c["min_age"]
        age_on = np.where(early, c["min_age"] + rng.random(n) * 3.0, age_on)
        day = dem.dob + np.floor(age_on * YEAR)
        ok = has & (day <= extract_day)
        onset[:, j] = np.where(ok, day, NEVER).astype(np.int32)
        if c.get("resolved"):
            cand = ok & (onset[:, j] <= extract_day - 180)
            resolves = cand & (rng.random(n) < c.get("resolve_prob", 0.0))
            idx = np.flatnonzero(resolves)
            rday = uniform_days(rng, onset[idx, j] + 180, np.full(len(idx), extract_day))
            res[idx, j] = rday
            rel_p = c.get("relapse_prob", 0.0)
            rel = (rday <= extract_day - 90) & (rng.random(len(idx)) < rel_p)
            ridx = idx[rel]
            relapse[ridx, j] = uniform_days(rng, res[ridx, j] + 90, np.full(len(ridx), extract_day))
    efi_of = [cp[key].get("efi") for key in keys]
    em = np.array([float(cp[key].get("emergency", 0.0)) for key in keys])
    de = np.array([float(cp[key].get("death", 0.0)) for key in keys])
    return Conditions(keys, onset, res, relapse, efi_of, em, de)


def _solve_intercept(lp: np.ndarray, reached: np.ndarray, target: float) -> float:
    """a such that mean(logistic(lp + a) * reached) == target (bisection, deterministic)."""
    lo, hi = -25.0, 25.0
    for _ in range(34):
        mid = (lo + hi) / 2
        if (logistic(lp + mid) * reached).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class Frailty:
    keys: list[str]
    onset: np.ndarray  # (n, D) int32 day of each coded deficit, NEVER = none

    def subset(self, idx: np.ndarray) -> Frailty:
        return Frailty(self.keys, self.onset[idx])

    def count(self, t: np.ndarray | int, rows: np.ndarray | None = None) -> np.ndarray:
        on = self.onset if rows is None else self.onset[rows]
        tt = np.asarray(t)
        if tt.ndim == 1:
            tt = tt[:, None]
        return (on <= tt).sum(axis=1).astype(np.int32)


def simulate_frailty(
    rng: np.random.Generator,
    dem: Demography,
    rf: RiskFactors,
    cond: Conditions,
    params: dict,
    extract_day: int,
) -> Frailty:
    fp = params["frailty"]
    keys = list(fp["deficits"])
    n = len(dem.dob)
    age = (extract_day - dem.dob) / YEAR
    n_ltc = cond.active(extract_day).sum(axis=1)
    onset = np.full((n, len(keys)), NEVER, dtype=np.int32)
    window_start = np.maximum(
        extract_day - np.floor(fp["onset_years_back_max"] * YEAR),
        dem.dob + np.floor(fp["min_age"] * YEAR),
    ).astype(np.int64)
    eligible = window_start <= extract_day
    for j, key in enumerate(keys):
        d = fp["deficits"][key]
        lp = (
            d["base"]
            + d["age"] * (age - 75) / 10
            + d["ltc"] * n_ltc
            + d["load"] * rf.z
            + d["dep"] * dem.dep
        )
        has = eligible & (rng.random(n) < logistic(lp))
        idx = np.flatnonzero(has)
        # later onset is likelier at older ages: skew towards the end of the window
        span = extract_day - window_start[idx]
        onset[idx, j] = (
            window_start[idx] + np.floor(np.sqrt(rng.random(len(idx))) * (span + 1))
        ).astype(np.int32)
    return Frailty(keys, onset)


def deficits_at(
    cond: Conditions, fr: Frailty, t: np.ndarray | int, rows: np.ndarray | None = None
) -> np.ndarray:
    """eFI deficits (coded + condition-derived; polypharmacy excluded) at day ``t``."""
    act = cond.active(t, rows)
    return fr.count(t, rows) + cond.efi_condition_deficits(act)
