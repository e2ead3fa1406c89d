"""Social prescribing: referral at a temporary peak of need, and its true effect.

Mechanism (parameters under ``social_prescribing`` in params.yaml; docs/synthetic-data.md):

- **Peak of need.** Around every referral day ``R`` a person's GP appointment, A&E
  attendance and emergency admission rates are multiplied by ``1 + height * s(d - R)`` with
  ``s(o) = 2^(o / rise_half_life)`` before the referral and ``2^(-o / fall_half_life)`` after
  (``s(0) = 1``; cut at ``+-span_days``). Peaks of two referrals add. The peak happens with or
  without social prescribing: it is the reason for the referral, not its result.
- **True effect.** From an engaged referral's first contact (status ``active`` or
  ``discharged``) for ``effect_days``, the rates are multiplied by ``1 - effect[outcome]``.

Both are overlays on the stages' own Poisson processes, drawn from this module's stream:
extra events from the peak intensity ``rate * height * s`` (Poisson, by thinning from the
person's largest rate), then every event inside an effect period is removed with probability
``effect``. The stages' own draws and their state feedback (the emergency hazard's prior
admissions) are untouched, so the intensity is exactly ``rate(d) * (1 + height*s) * (1 -
effect*in_effect(d))`` and :func:`impact_truth` computes expected differences exactly from
the same rates (no simulation noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

OUTCOMES = ("gp_appointments", "ae_attendances", "emergency_admissions")
#: follow-up windows after first contact, in days (first contact day included)
WINDOWS = {"6m": 182, "12m": 365}
_KEY = np.int64(1) << 32

RateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Exposure:
    """Referral days and engaged first contacts, and the rates each stage recorded."""

    n: int
    ref_pid: np.ndarray
    ref_day: np.ndarray
    ref_start: np.ndarray  # per person: first index into ref_* (sorted by person, day)
    ref_count: np.ndarray
    eng_key: np.ndarray  # sorted pid << 32 | first-contact day of engaged referrals
    height: dict[str, float]
    effect: dict[str, float]
    effect_days: int
    rise: float
    fall: float
    span: int
    #: outcome -> (expected events per day, counting weight) functions of (pid, day)
    rates: dict[str, tuple[RateFn, RateFn]] = field(default_factory=dict)

    def shape(self, offset: np.ndarray) -> np.ndarray:
        o = offset.astype(np.float64)
        s = np.where(o < 0, np.exp2(o / self.rise), np.exp2(-o / self.fall))
        return np.where(np.abs(offset) <= self.span, s, 0.0)

    def peak(self, pid: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Sum over the person's referrals of s(day - referral day)."""
        total = np.zeros(len(pid))
        kmax = int(self.ref_count.max()) if len(self.ref_count) else 0
        for k in range(kmax):  # at most a few referrals per person
            has = self.ref_count[pid] > k
            idx = self.ref_start[pid[has]] + k
            total[has] += self.shape(day[has] - self.ref_day[idx])
        return total

    def in_effect(self, pid: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Day within ``effect_days`` from an engaged first contact on or before it."""
        if len(self.eng_key) == 0:
            return np.zeros(len(pid), dtype=bool)
        q = pid.astype(np.int64) * _KEY + day.astype(np.int64)
        i = np.searchsorted(self.eng_key, q, side="right") - 1
        ok = i >= 0
        k = self.eng_key[np.maximum(i, 0)]
        same = ok & (k // _KEY == pid)
        return same & (day.astype(np.int64) - k % _KEY < self.effect_days)

    def multiplier(self, outcome: str, pid: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The factor on the person's rate at ``day`` (treated world)."""
        m = 1.0 + self.height[outcome] * self.peak(pid, day)
        return m * np.where(self.in_effect(pid, day), 1.0 - self.effect[outcome], 1.0)


def make_exposure(params: dict, refs, n: int) -> Exposure:
    sp = params["social_prescribing"]
    pk = sp["need_peak"]
    order = np.lexsort((refs.referral, refs.pid))
    ref_pid = refs.pid[order].astype(np.int64)
    ref_day = refs.referral[order].astype(np.int64)
    count = np.bincount(ref_pid, minlength=n).astype(np.int64)
    start = np.cumsum(count) - count
    engaged = np.isin(refs.status, ["active", "discharged"]) & (refs.first_contact >= 0)
    eng_key = np.sort(
        refs.pid[engaged].astype(np.int64) * _KEY + refs.first_contact[engaged].astype(np.int64)
    )
    return Exposure(
        n=n,
        ref_pid=ref_pid,
        ref_day=ref_day,
        ref_start=start,
        ref_count=count,
        eng_key=eng_key,
        height={k: float(pk["height"][k]) for k in OUTCOMES},
        effect={k: float(sp["effect"][k]) for k in OUTCOMES},
        effect_days=int(sp["effect_days"]),
        rise=float(pk["rise_half_life_days"]),
        fall=float(pk["fall_half_life_days"]),
        span=int(pk["span_days"]),
    )


def overlay(
    rng: np.random.Generator,
    ex: Exposure,
    outcome: str,
    pid: np.ndarray,
    day: np.ndarray,
    rate: RateFn,
    rate_max: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    weight: RateFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add the peak-of-need events and thin the events inside effect periods.

    ``pid``/``day``: the stage's events; ``rate(pid, day)``: its expected events per day, at most
    ``rate_max[pid]``; events exist only on days ``lo[pid]..hi[pid]``. ``weight(pid, day)``:
    the probability that an event counts as the outcome (recorded for the truth only)."""
    ex.rates[outcome] = (rate, weight if weight is not None else _ones)
    offsets = np.arange(-ex.span, ex.span + 1, dtype=np.int64)
    s = ex.shape(offsets)
    cum = np.cumsum(s / s.sum())
    cum[-1] = 1.0
    lam = rate_max[ex.ref_pid] * ex.height[outcome] * s.sum()
    counts = rng.poisson(lam)
    r = np.repeat(np.arange(len(ex.ref_pid)), counts)
    e_pid = ex.ref_pid[r]
    e_day = ex.ref_day[r] + offsets[np.searchsorted(cum, rng.random(len(r)), side="right")]
    u = rng.random(len(r))
    keep = (e_day >= lo[e_pid]) & (e_day <= hi[e_pid])
    ratio = rate(e_pid[keep], e_day[keep]) / np.maximum(rate_max[e_pid[keep]], 1e-300)
    keep[keep] = u[keep] < ratio
    all_pid = np.concatenate([pid.astype(np.int64), e_pid[keep]])
    all_day = np.concatenate([day.astype(np.int64), e_day[keep]])
    thin = ex.in_effect(all_pid, all_day) & (rng.random(len(all_pid)) < ex.effect[outcome])
    return all_pid[~thin].astype(np.int32), all_day[~thin].astype(np.int32)


def _ones(pid: np.ndarray, day: np.ndarray) -> np.ndarray:
    return np.ones(len(pid))


def expected(
    ex: Exposure,
    outcome: str,
    pid: np.ndarray,
    start: np.ndarray,
    days: int,
    treated: bool,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> np.ndarray:
    """Expected count per person over ``start..start+days-1`` (exact sum over days; only days
    within ``lo[pid]..hi[pid]`` when given), in the treated world or its counterfactual
    without social prescribing (the peak of need kept, no effect)."""
    rate, weight = ex.rates[outcome]
    out = np.zeros(len(pid))
    for j in range(0, days, 61):  # blocks of days keep the grid small
        width = min(61, days - j)
        p = np.repeat(pid, width)
        d = (start[:, None] + j + np.arange(width)[None, :]).ravel()
        m = 1.0 + ex.height[outcome] * ex.peak(p, d)
        if treated:
            m = m * np.where(ex.in_effect(p, d), 1.0 - ex.effect[outcome], 1.0)
        if lo is not None and hi is not None:
            m = m * ((d >= lo[p]) & (d <= hi[p]))
        out += (rate(p, d) * m * weight(p, d)).reshape(len(pid), width).sum(axis=1)
    return out


def impact_truth(
    ex: Exposure,
    refs,
    last: np.ndarray,
    death: np.ndarray,
    extract_day: int,
    admitted_via_ae: float,
    outcome_truth: dict[str, tuple[float, int]],
    params: dict,
) -> dict:
    """The sidecar ``impact_truth.json`` content (see docs/synthetic-data.md)."""
    reached = refs.first_contact >= 0
    persons, first = _min_by_person(refs.pid[reached], refs.first_contact[reached])
    effects: dict[str, float] = {}
    n: dict[str, int] = {}
    for wname, days in WINDOWS.items():
        end = first + days - 1
        ok = (end <= extract_day) & (end <= last[persons]) & (end < death[persons])
        p, s0 = persons[ok], first[ok]
        diff = {}
        for outcome in OUTCOMES:
            diff[outcome] = expected(ex, outcome, p, s0, days, True) - expected(
                ex, outcome, p, s0, days, False
            )
        # admitted A&E attendances are the emergency admissions that came through A&E
        diff["ae_attendances"] = (
            diff["ae_attendances"] + admitted_via_ae * diff["emergency_admissions"]
        )
        for outcome in OUTCOMES:
            key = f"{outcome}_{wname}"
            effects[key] = round(float(diff[outcome].mean()) if len(p) else 0.0, 6)
            n[key] = len(p)
    for measure, (value, count) in outcome_truth.items():
        effects[measure] = round(value, 6)
        n[measure] = count
    sp = params["social_prescribing"]
    return {
        "social_prescribing": effects,
        "n": n,
        "definitions": {
            "treated": "people with a first_contact_date in sp_referrals; index date = their "
            "earliest first_contact_date",
            "windows": "index date .. index date + 181 days (6m), + 364 days (12m), inclusive",
            "population": "service use: treated people whose window ends on or before the "
            "extract date and who are registered and alive through its last day; outcome "
            "scores: referrals with both a baseline and a followup_6m score of the measure",
            "value": "service use: mean over those people of the expected count in the window "
            "with social prescribing minus without it (same person, same peak of need), "
            "computed exactly from the generator's rates; scores: mean follow-up minus baseline "
            "change attributable to social prescribing (expected score with minus without)",
            "gp_appointments": "gp_appointments rows with status 'attended' and staff_role "
            "other than 'social_prescriber' (the link worker's own sessions are the "
            "intervention), by appointment_date",
            "ae_attendances": "sus_ecds rows (any department type) by arrival date",
            "emergency_admissions": "sus_apc spells with admission_method 21-25, 2A, 2C, 2D, "
            "28 by admission_date (2B transfers excluded: the continuation of the same stay; "
            "including them adds about 3% to the effect)",
            "effect_applies_to": "engaged referrals only (status active or discharged): "
            "declined referrals have a first contact and no effect",
        },
        "parameters": {
            "need_peak": sp["need_peak"],
            "effect": sp["effect"],
            "effect_days": sp["effect_days"],
            "measures": sp["measures"],
            "need_dip_remaining_6m": sp["need_dip_remaining_6m"],
        },
    }


def _min_by_person(pid: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((day, pid))
    pid, day = pid[order].astype(np.int64), day[order].astype(np.int64)
    firsts = np.ones(len(pid), dtype=bool)
    firsts[1:] = pid[1:] != pid[:-1]
    return pid[firsts], day[firsts]


def expected_rounded(mu: np.ndarray, sd: float, lo: float, hi: float) -> np.ndarray:
    """E[clip(round(X), lo, hi)] for X ~ Normal(mu, sd) (integer lo..hi; round half up at
    the cut points, which has probability zero)."""
    ks = np.arange(int(lo), int(hi) + 1, dtype=np.float64)
    # P(round(X) >= k) for k = lo+1..hi  ->  E = lo + sum_k P(X >= k - 0.5)
    upper = ks[1:] - 0.5
    return lo + (1.0 - ndtr((upper[None, :] - mu[:, None]) / sd)).sum(axis=1)
