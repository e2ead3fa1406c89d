"""Engagement, police notifications (PPN), social prescribing, GP appointments and community
assets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from phm.contract import (
    APPOINTMENT_MODES,
    APPOINTMENT_STATUS,
    PPN_CATEGORIES,
    SP_REASONS,
    SP_STATUS,
    STAFF_ROLES,
)
from phm.synth._util import (
    YEAR,
    poisson_events,
    repeat_offsets,
    sample_rows,
    sample_weighted,
    uniform_days,
)
from phm.synth.clinical import Conditions, Frailty, deficits_at
from phm.synth.impact import Exposure, overlay
from phm.synth.population import CURRENT, Demography, Registrations, calibrated_bernoulli
from phm.synth.reference import Lsoas


def _keys_pick(rng: np.random.Generator, weights: dict, n: int) -> np.ndarray:
    keys = np.asarray([str(k) for k in weights])
    return keys[sample_weighted(rng, list(weights.values()), n)]


@dataclass
class Engagement:
    low: np.ndarray  # low engagement with the practice
    ppn_group: np.ndarray  # the ~1% with police notifications


def make_engagement(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    engagement_z: np.ndarray,
    extract_day: int,
) -> Engagement:
    eg = params["engagement"]
    age = (extract_day - dem.dob) / YEAR
    act = cond.active(extract_day)

    def has(k: str) -> np.ndarray:
        return act[:, cond.index(k)]

    adult_young = (age >= 16) & (age < 50)
    ppn_score = (
        1.3 * has("severe_mental_illness")
        + 1.6 * has("substance_misuse")
        + 0.9 * has("depression")
        + 0.6 * has("anxiety")
        + 0.6 * has("learning_disability")
        + 0.8 * dem.dep
        + 1.0 * adult_young
        + 0.5 * engagement_z
        - 2.5 * (age < 12)
    )
    ppn = calibrated_bernoulli(rng, ppn_score, eg["ppn_share"])
    mh = (
        0.7 * has("depression") + 0.9 * has("severe_mental_illness") + 1.1 * has("substance_misuse")
    )
    low_score = 0.9 * dem.dep + 0.8 * ((age >= 18) & (age < 40)) + mh + 1.0 * engagement_z
    low = calibrated_bernoulli(rng, low_score, eg["low_engagement_rate"]) | ppn
    return Engagement(low, ppn)


@dataclass
class Ppn:
    pid: np.ndarray
    incident: np.ndarray
    shared: np.ndarray
    category: np.ndarray
    risk: np.ndarray


def make_ppn(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    eng: Engagement,
    extract_day: int,
) -> Ppn:
    eg = params["engagement"]
    n = len(dem.dob)
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    lo = np.maximum(extract_day - 1094, dem.dob + 30)
    counts = np.where(eng.ppn_group, 1 + rng.poisson(eg["ppn_extra_per_person"], n), 0)
    counts += (~eng.ppn_group) & (rng.random(n) < eg["ppn_sporadic_rate"])
    counts = np.where(lo <= last, counts, 0)
    pid = np.repeat(np.arange(n, dtype=np.int32), counts)
    incident = uniform_days(rng, lo[pid], last[pid])
    gap = np.floor(np.exp(rng.normal(eg["ppn_gap_log_mean"], eg["ppn_gap_log_sd"], len(pid))))
    gap = np.minimum(gap, eg["ppn_gap_max"]).astype(np.int32)
    gap[rng.random(len(pid)) < 0.08] = 0  # same-day sharing
    shared = incident + gap
    keep = shared <= extract_day
    pid, incident, shared = pid[keep], incident[keep], shared[keep]
    age = (incident - dem.dob[pid]) / YEAR
    act = cond.active(incident, pid)
    female = dem.sex[pid] == "F"
    w = np.tile(np.array([2.0, 1.5, 1.0, 0.1, 0.5, 0.3, 0.3]), (len(pid), 1))
    cats = list(PPN_CATEGORIES)
    w[:, cats.index("mental_health")] += 2.5 * (
        act[:, cond.index("severe_mental_illness")] | act[:, cond.index("depression")]
    )
    w[:, cats.index("substance_misuse")] += 2.5 * act[:, cond.index("substance_misuse")]
    w[:, cats.index("domestic_abuse")] += 2.0 * (female & (age >= 16) & (age < 55))
    w[:, cats.index("child_at_risk")] += 5.0 * (age < 18)
    w[:, cats.index("missing_person")] += 1.5 * (age < 18)
    w[:, cats.index("adult_at_risk")] += 2.0 * (age >= 65)
    category = np.asarray(cats)[sample_rows(rng, w, np.arange(len(pid)))]
    risk = _keys_pick(rng, eg["ppn_risk_weights"], len(pid))
    order = np.lexsort((incident, pid))
    return Ppn(pid[order], incident[order], shared[order], category[order], risk[order])


@dataclass
class Referrals:
    pid: np.ndarray
    referral: np.ndarray
    source: np.ndarray
    reasons: np.ndarray
    attempts: np.ndarray
    first_contact: np.ndarray  # -1 = none
    status: np.ndarray
    discharge: np.ndarray  # -1 = none
    sessions: np.ndarray


def make_referrals(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    fr: Frailty,
    reg: Registrations,
    eng: Engagement,
    carer: np.ndarray,
    bmi: np.ndarray,
    extract_day: int,
) -> Referrals:
    sp = params["social_prescribing"]
    age = (extract_day - dem.dob) / YEAR
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    lo = np.maximum(
        np.maximum(extract_day - sp["window_days"] + 1, reg.start), dem.dob + int(18 * YEAR)
    )
    eligible = lo <= last
    act = cond.active(extract_day)

    def has(k: str) -> np.ndarray:
        return act[:, cond.index(k)]

    mh = has("depression") | has("anxiety") | has("severe_mental_illness")
    defs = deficits_at(cond, fr, extract_day)
    score = (
        1.0 * mh
        + 0.6 * (age >= 75)
        + 0.5 * dem.dep
        + 1.2 * eng.ppn_group
        + 0.5 * carer
        + 0.5 * (defs >= 3)
        + 0.3 * (act.sum(axis=1) >= 2)
        + 0.8 * has("substance_misuse")
        - 9.0 * ~eligible
    )
    referred = calibrated_bernoulli(
        rng, score, sp["referral_rate_year"] * sp["window_days"] / 365.0
    )
    referred &= eligible
    idx = np.flatnonzero(referred)
    day1 = uniform_days(rng, lo[idx], last[idx])
    again = (rng.random(len(idx)) < sp["rereferral_prob"]) & (day1 + 60 <= last[idx])
    idx2 = idx[again]
    day2 = uniform_days(rng, day1[again] + 60, last[idx2])
    pid = np.concatenate([idx, idx2]).astype(np.int32)
    ref = np.concatenate([day1, day2]).astype(np.int32)
    m = len(pid)
    # source
    source = _keys_pick(rng, sp["source_weights"], m)
    police = eng.ppn_group[pid] & (rng.random(m) < 0.4)
    source = np.where(police, "police", source)
    source = np.where(~eng.ppn_group[pid] & (source == "police"), "gp", source)
    # reasons: 1-3, weighted by the person's circumstances, without replacement
    a = act[pid]
    w = np.ones((m, len(SP_REASONS)))
    r = list(SP_REASONS)
    w[:, r.index("mental_health")] += 4.0 * mh[pid]
    w[:, r.index("isolation")] += 3.0 * (age[pid] >= 65) + 1.5 * (defs[pid] >= 3)
    w[:, r.index("finance_debt")] += 2.5 * dem.dep[pid]
    w[:, r.index("housing")] += 1.5 * dem.dep[pid] + 1.5 * eng.ppn_group[pid]
    w[:, r.index("benefits")] += 2.0 * dem.dep[pid]
    w[:, r.index("substance_misuse")] += 4.0 * a[:, cond.index("substance_misuse")] - 0.8
    w[:, r.index("carer_support")] += 4.0 * carer[pid] - 0.7
    w[:, r.index("physical_activity")] += 1.0 * (a.sum(axis=1) >= 1) + 1.0 * (bmi[pid] >= 30)
    w[:, r.index("education_work_volunteering")] += 1.0 * (age[pid] < 50)
    w[:, r.index("other")] -= 0.6
    w[:, r.index("bereavement")] += 0.5 * (age[pid] >= 60)
    w = np.maximum(w, 0.05)
    k = 1 + sample_weighted(rng, [0.45, 0.35, 0.2], m)
    gumbel = np.log(w) - np.log(-np.log(rng.random(w.shape)))
    rank = np.argsort(np.argsort(-gumbel, axis=1, kind="stable"), axis=1, kind="stable")
    chosen = rank < k[:, None]
    names = np.asarray(r, dtype=object)
    reasons = _join_flags(chosen, names)
    # pathway: unable to contact / declined / engaged; contact after several attempts
    low = eng.low[pid]
    u = rng.random(m)
    p_unable = np.minimum(sp["unable_to_contact"] * np.where(low, 2.0, 1.0), 0.5)
    unable = u < p_unable
    declined = ~unable & (u < p_unable + sp["declined"])
    tries = 1 + np.minimum(rng.geometric(0.55, m) - 1, 5)
    contact = ref + tries * 4 + np.floor(rng.random(m) * 3 * tries).astype(np.int32)
    status = np.full(m, "waiting", dtype="U17")
    first = np.full(m, -1, dtype=np.int64)
    discharge = np.full(m, -1, dtype=np.int64)
    attempts = tries.copy()
    # unable to contact: 3-6 attempts, a few days apart
    u_tries = 3 + np.floor(rng.random(m) * 4).astype(np.int64)
    u_done = ref + u_tries * 5 <= extract_day
    status = np.where(unable & u_done, "unable_to_contact", status)
    attempts = np.where(
        unable, np.where(u_done, u_tries, np.minimum(u_tries, (extract_day - ref) // 5)), attempts
    )
    reached = ~unable & (contact <= extract_day)
    first = np.where(reached, contact, -1)
    status = np.where(declined & reached, "declined", status)
    engaged = ~unable & ~declined & reached
    duration = uniform_days(
        rng, np.full(m, sp["duration_days"][0]), np.full(m, sp["duration_days"][1])
    )
    end = contact + duration
    status = np.where(
        engaged & (end <= extract_day), "discharged", np.where(engaged, "active", status)
    )
    discharge = np.where(engaged & (end <= extract_day), end, -1)
    waiting = status == "waiting"
    attempts = np.where(
        waiting & ~unable, np.minimum(tries, np.maximum((extract_day - ref) // 4, 0)), attempts
    )
    sessions = np.where(engaged, 2 + rng.poisson(2.0, m), np.where(declined & reached, 1, 0))
    assert set(np.unique(status)) <= set(SP_STATUS)
    order = np.lexsort((ref, pid))
    return Referrals(
        pid[order],
        ref[order],
        source[order],
        reasons[order],
        attempts[order].astype(np.int64),
        first[order],
        status[order],
        discharge[order],
        sessions[order],
    )


def _join_flags(flags: np.ndarray, names: np.ndarray) -> np.ndarray:
    """';'-join the names whose flag is set, per row (vectorised through polars)."""
    rows, cols = np.nonzero(flags)
    df = (
        pl.DataFrame({"row": rows.astype(np.int64), "name": names[cols].astype(str)})
        .group_by("row", maintain_order=True)
        .agg(pl.col("name").str.join(";"))
    )
    out = np.full(flags.shape[0], "", dtype=object)
    out[df["row"].to_numpy()] = df["name"].to_numpy()
    return out


@dataclass
class Outcomes:
    ref_index: np.ndarray  # index into Referrals arrays
    measure: np.ndarray
    timepoint: np.ndarray
    score: np.ndarray
    recorded: np.ndarray


def make_outcomes(
    rng: np.random.Generator, params: dict, dem: Demography, refs: Referrals, extract_day: int
) -> tuple[Outcomes, dict[str, tuple[float, int]]]:
    """Outcome scores at first contact (baseline) and about 6 months later, and the truth:
    per measure, the mean change attributable to social prescribing over the referrals with
    both scores recorded, and their number.

    The person's usual level ``U`` is worse at referral by ``dip`` (the peak of need), so
    ``baseline = U - dip``; at 6 months ``need_dip_remaining_6m`` of the dip is left, and the
    effect ``effect * dose`` (dose = min(sessions / 4, 1.5)) is added, with noise. Scores are
    rounded and clipped to the measure's range (directions: ``dip`` is towards worse,
    ``effect`` is the signed change in the score)."""
    from phm.synth.impact import expected_rounded

    sp = params["social_prescribing"]
    remaining = sp["need_dip_remaining_6m"]
    m = len(refs.pid)
    engaged = np.isin(refs.status, ["active", "discharged"])
    with_outcomes = engaged & (rng.random(m) >= sp["no_outcomes_share"])
    ri = np.flatnonzero(with_outcomes)
    wellbeing = rng.normal(0, 1, len(ri)) - 0.3 * dem.dep[refs.pid[ri]]
    fu_day = refs.first_contact[ri] + 182 + np.floor(rng.random(len(ri)) * 29).astype(np.int64) - 14
    has_fu = (fu_day <= extract_day) & (rng.random(len(ri)) >= sp["followup_loss"])
    dose = np.minimum(refs.sessions[ri] / 4.0, 1.5)
    parts = []
    truth: dict[str, tuple[float, int]] = {}
    for measure, mp in sp["measures"].items():
        lo, hi = _measure_range(measure)
        better = -1.0 if measure in ("ons4_anxiety", "ucla3_loneliness") else 1.0
        sd = mp["sd"]
        usual = (
            mp["baseline_mean"]
            + better * mp["dip"]
            + better * 0.6 * sd * wellbeing
            + rng.normal(0, 0.8 * sd, len(ri))
        )
        base = np.clip(np.round(usual - better * mp["dip"]), lo, hi)
        mu0 = usual - better * mp["dip"] * remaining  # follow-up without social prescribing
        effect = mp["effect"] * dose
        fu = mu0 + effect + rng.normal(0, mp["change_sd"], len(ri))
        fu = np.clip(np.round(fu), lo, hi)
        rec_b = rng.random(len(ri)) < sp["measure_recorded_prob"]
        rec_f = has_fu & rec_b & (rng.random(len(ri)) < 0.97)
        both = rec_b & rec_f
        gain = expected_rounded(mu0[both] + effect[both], mp["change_sd"], lo, hi)
        gain = gain - expected_rounded(mu0[both], mp["change_sd"], lo, hi)
        truth[measure] = (float(gain.mean()) if both.any() else 0.0, int(both.sum()))
        for tp, score, day, rec in (
            ("baseline", base, refs.first_contact[ri], rec_b),
            ("followup_6m", fu, fu_day, rec_f),
        ):
            parts.append(
                (
                    ri[rec],
                    np.full(int(rec.sum()), measure),
                    np.full(int(rec.sum()), tp),
                    score[rec],
                    day[rec],
                )
            )
    ref_index = np.concatenate([p[0] for p in parts])
    measure = np.concatenate([p[1] for p in parts])
    timepoint = np.concatenate([p[2] for p in parts])
    score = np.concatenate([p[3] for p in parts]).astype(np.float64)
    recorded = np.concatenate([p[4] for p in parts]).astype(np.int64)
    mi = {k: i for i, k in enumerate(sp["measures"])}
    order = np.lexsort((_rank(measure, mi), timepoint == "followup_6m", ref_index))
    outcomes = Outcomes(
        ref_index[order], measure[order], timepoint[order], score[order], recorded[order]
    )
    return outcomes, truth


def _rank(values: np.ndarray, mapping: dict[str, int]) -> np.ndarray:
    out = np.zeros(len(values), dtype=np.int64)
    for k, i in mapping.items():
        out[values == k] = i
    return out


def _measure_range(measure: str) -> tuple[float, float]:
    from phm.contract import SP_MEASURE_RANGES

    lo, hi = SP_MEASURE_RANGES[measure]
    return float(lo), float(hi)


APPT_STATUS = list(APPOINTMENT_STATUS)
ATTENDED, DNA, CANCEL_PATIENT, CANCEL_PRACTICE, BOOKED = (
    APPT_STATUS.index(s) for s in APPOINTMENT_STATUS
)
ROLES = list(STAFF_ROLES)
MODES = list(APPOINTMENT_MODES)


@dataclass
class Appointments:
    pid: np.ndarray
    day: np.ndarray
    status: np.ndarray  # index into APPT_STATUS
    role: np.ndarray  # index into ROLES
    mode: np.ndarray  # index into MODES, -1 = null
    practice: np.ndarray  # index into practices


def make_appointments(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    fr: Frailty,
    reg: Registrations,
    eng: Engagement,
    refs: Referrals,
    first_invite: np.ndarray,
    u_frailty: np.ndarray,
    extract_day: int,
    impact_rng: np.random.Generator | None = None,
    ex: Exposure | None = None,
) -> Appointments:
    """GP appointments; with ``ex``, the social prescribing peak of need and effect are laid
    over the past appointments (drawn from ``impact_rng``, see phm.synth.impact)."""
    ap = params["appointments"]
    n = len(dem.dob)
    age = (extract_day - dem.dob) / YEAR
    current = reg.status == CURRENT
    last = np.where(current, extract_day, reg.end)
    n_ltc = cond.active(extract_day).sum(axis=1)
    defs = deficits_at(cond, fr, extract_day)
    rate = (
        ap["rate_base"]
        * np.exp(ap["rate_age"] * (np.clip(age, 0, 100) - 40))
        * (1 + ap["rate_female"] * (dem.sex == "F"))
        * (1 + ap["per_ltc"] * n_ltc)
        * (1 + ap["per_deficit"] * defs)
        * u_frailty ** ap["frailty_power"]
    )
    rate = rate * np.where(age < 5, 1.8, 1.0)
    reg_lo = np.where(reg.prev_practice >= 0, reg.prev_start, reg.start)
    lo = np.maximum(np.maximum(extract_day - ap["window_days"] + 1, reg_lo), dem.dob)
    pid, day = poisson_events(rng, rate, lo, last)
    young_p = (age >= 18) & (age < 35)
    p_dna_p = np.minimum(
        ap["dna_base"]
        * np.exp(
            ap["dna_dep"] * dem.dep
            + ap["dna_young_adult"] * young_p
            + ap["dna_low_engagement"] * eng.low
        ),
        0.6,
    )
    if ex is not None and impact_rng is not None:
        frail_p = (age >= 65) & (defs >= 4)
        sp_share = {
            f: w["social_prescriber"] / sum(w.values())
            for f, w in ((True, ap["staff_weights_frail"]), (False, ap["staff_weights"]))
        }
        attend = (1.0 - p_dna_p - ap["cancel_patient"] - ap["cancel_practice"]) * np.where(
            frail_p, 1.0 - sp_share[True], 1.0 - sp_share[False]
        )
        answered_until = np.where(eng.low & (first_invite >= 0), first_invite, 2**40)

        def counted(p: np.ndarray, d: np.ndarray) -> np.ndarray:
            return attend[p] * (d < answered_until[p])

        pid, day = overlay(
            impact_rng,
            ex,
            "gp_appointments",
            pid,
            day,
            lambda p, d: rate[p] / YEAR,
            rate / YEAR,
            lo,
            last,
            counted,
        )
    fut_pid, fut_day = poisson_events(
        rng,
        np.where(current, rate, 0.0),
        np.full(n, extract_day + 1),
        np.full(n, extract_day + ap["future_days"]),
    )
    m_past = len(pid)
    pid = np.concatenate([pid, fut_pid]).astype(np.int32)
    day = np.concatenate([day, fut_day]).astype(np.int32)
    m = len(pid)
    # status
    p_dna = p_dna_p[pid]
    u = rng.random(m)
    c1 = p_dna + ap["cancel_patient"]
    c2 = c1 + ap["cancel_practice"]
    status = np.select(
        [u < p_dna, u < c1, u < c2], [DNA, CANCEL_PATIENT, CANCEL_PRACTICE], ATTENDED
    ).astype(np.int8)
    status[m_past:] = BOOKED
    # invitations nobody answers: low-engagement people attend nothing after their first invite
    fi = first_invite[pid]
    unanswered = eng.low[pid] & (fi >= 0) & (day >= fi) & (status == ATTENDED)
    status[unanswered] = np.where(rng.random(int(unanswered.sum())) < 0.75, DNA, CANCEL_PATIENT)
    # staff role and mode
    frail = (age[pid] >= 65) & (defs[pid] >= 4)
    role = np.empty(m, dtype=np.int8)
    mode = np.empty(m, dtype=np.int8)
    for sel, rw, mw in (
        (frail, ap["staff_weights_frail"], ap["mode_weights_frail"]),
        (~frail, ap["staff_weights"], ap["mode_weights"]),
    ):
        idx = np.flatnonzero(sel)
        role[idx] = sample_weighted(rng, [rw[k] for k in ROLES], len(idx))
        mode[idx] = sample_weighted(rng, [mw[k] for k in MODES], len(idx))
    mode[rng.random(m) < ap["mode_null_rate"]] = -1
    # social prescriber sessions for engaged referrals
    sp_pid, sp_day, sp_status, sp_mode = _sp_appointments(rng, refs, extract_day)
    pid = np.concatenate([pid, sp_pid]).astype(np.int32)
    day = np.concatenate([day, sp_day]).astype(np.int32)
    status = np.concatenate([status, sp_status]).astype(np.int8)
    role = np.concatenate([role, np.full(len(sp_pid), ROLES.index("social_prescriber"))]).astype(
        np.int8
    )
    mode = np.concatenate([mode, sp_mode]).astype(np.int8)
    practice = np.where(
        (reg.prev_practice[pid] >= 0) & (day <= reg.prev_end[pid]),
        reg.prev_practice[pid],
        reg.practice[pid],
    ).astype(np.int32)
    order = np.lexsort((role, day, pid))
    return Appointments(
        pid[order], day[order], status[order], role[order], mode[order], practice[order]
    )


def _sp_appointments(
    rng: np.random.Generator, refs: Referrals, extract_day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    has = refs.first_contact >= 0
    idx = np.flatnonzero(has)
    n_s = refs.sessions[idx]
    end = np.where(refs.discharge[idx] >= 0, refs.discharge[idx], extract_day)
    span = np.maximum(end - refs.first_contact[idx], 1)
    rep = np.repeat(np.arange(len(idx)), n_s)
    j = repeat_offsets(n_s)
    day = refs.first_contact[idx][rep] + np.floor(j * span[rep] / np.maximum(n_s[rep], 1)).astype(
        np.int64
    )
    status = np.where((j > 0) & (rng.random(len(rep)) < 0.1), DNA, ATTENDED).astype(np.int8)
    keep = day <= extract_day
    pid = refs.pid[idx][rep][keep]
    day, status = day[keep], status[keep]
    f2f, tel = MODES.index("face_to_face"), MODES.index("telephone")
    mode = np.where(rng.random(len(pid)) < 0.6, f2f, tel).astype(np.int8)
    # next session booked for active caseload
    act = np.flatnonzero(refs.status == "active")
    b_day = extract_day + 1 + np.floor(rng.random(len(act)) * 21).astype(np.int64)
    pid = np.concatenate([pid, refs.pid[act]])
    day = np.concatenate([day, b_day])
    status = np.concatenate([status, np.full(len(act), BOOKED, dtype=np.int8)])
    mode = np.concatenate([mode, np.full(len(act), f2f, dtype=np.int8)])
    return pid, day, status, mode


@dataclass
class Assets:
    asset_id: np.ndarray
    name: np.ndarray
    category: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    lsoa: np.ndarray


def make_assets(rng: np.random.Generator, params: dict, lsoas: Lsoas, n_patients: int) -> Assets:
    import shapely

    from phm.contract import ASSET_CATEGORIES

    ca = params["community_assets"]
    n = max(ca["minimum"], round(n_patients / ca["per_patients"]))
    cats = list(ASSET_CATEGORIES)
    w = [ca["category_weights"][c] for c in cats]
    cat_idx = np.concatenate([np.arange(len(cats)), sample_weighted(rng, w, n - len(cats))])
    cat_idx = cat_idx[rng.permutation(n)]
    li = sample_weighted(rng, lsoas.pop_total, n)
    lon = np.empty(n)
    lat = np.empty(n)
    pending = np.arange(n)
    for _ in range(200):
        if len(pending) == 0:
            break
        b = lsoas.bounds_wgs84[li[pending]]
        x = b[:, 0] + rng.random(len(pending)) * (b[:, 2] - b[:, 0])
        y = b[:, 1] + rng.random(len(pending)) * (b[:, 3] - b[:, 1])
        inside = shapely.contains_xy(lsoas.geoms_wgs84[li[pending]], x, y)
        lon[pending[inside]] = x[inside]
        lat[pending[inside]] = y[inside]
        pending = pending[~inside]
    if len(pending):
        raise RuntimeError("rejection sampling of asset locations did not converge")
    areas = params["practices"]["pcn_names"]
    area = np.asarray(list(dict.fromkeys(areas)))[
        np.floor(rng.random(n) * len(set(areas))).astype(int)
    ]
    names = np.empty(n, dtype=object)
    for ci, c in enumerate(cats):
        sel = np.flatnonzero(cat_idx == ci)
        templates = ca["name_templates"][c]
        t = np.floor(rng.random(len(sel)) * len(templates)).astype(int)
        names[sel] = [templates[ti].format(area=a) for ti, a in zip(t, area[sel], strict=True)]
    ids = np.array([f"CA{i:05d}" for i in range(1, n + 1)])
    return Assets(
        ids,
        names,
        np.asarray(cats)[cat_idx],
        np.round(lat, 6),
        np.round(lon, 6),
        lsoas.code[li],
    )
