"""Hospital activity (SUS): admitted spells, emergency department attendances, outpatients,
and the emergency-admission truth.

Emergency admissions come from a per-person annual hazard, a function of the person's state
at the start of each 365-day window (age, sex, active conditions, frailty deficits,
deprivation, emergency admissions in the previous window) times an unobserved gamma frailty.
Within a window the count is Poisson(rate * exposure): so the true probability of at least
one admission in the window is ``1 - exp(-rate * exposure / 365)``, which is what
``truth.parquet`` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from phm.codelists import is_valid_sctid
from phm.synth._util import (
    YEAR,
    interp_knots,
    poisson_events,
    sample_rows,
    sample_weighted,
    uniform_days,
    weights_cum,
)
from phm.synth.clinical import Conditions, Frailty, deficits_at
from phm.synth.codes import icd10_messy
from phm.synth.impact import Exposure, expected, overlay
from phm.synth.population import CURRENT, DIED, Demography, Registrations

MH_KEYS = ("depression", "severe_mental_illness", "substance_misuse", "anxiety")


@dataclass
class Spells:
    pid: np.ndarray
    admission: np.ndarray
    discharge: np.ndarray  # -1 = still in hospital
    method: np.ndarray  # U2
    provider: np.ndarray
    primary: np.ndarray  # canonical ICD-10
    kind: (
        np.ndarray
    )  # 0 emergency (hazard), 1 emergency (terminal), 2 elective, 3 maternity, 4 other,
    # 5 emergency transfer in (2B) after a spell discharged to another hospital
    #: contract v2: NHS Data Dictionary DISCHARGE METHOD / DESTINATION codes ('' never occurs)
    discharge_method: np.ndarray | None = None
    discharge_destination: np.ndarray | None = None


@dataclass
class Truth:
    p_before: np.ndarray
    p_after: np.ndarray


def _state_rate(
    params: dict,
    dem: Demography,
    cond: Conditions,
    fr: Frailty,
    u: np.ndarray,
    day: int,
    prior: np.ndarray,
) -> np.ndarray:
    ep = params["emergency"]
    age = np.maximum((day - dem.dob) / YEAR, 0.0)
    act = cond.active(day)
    lp = np.log(interp_knots(ep["base_knots"], age))
    lp = lp + ep["male"] * (dem.sex == "M")
    lp = lp + act.astype(np.float64) @ cond.emergency_rr
    lp = lp + ep["per_deficit"] * deficits_at(cond, fr, day)
    lp = lp + ep["dep"] * dem.dep
    lp = lp + ep["prior"] * np.minimum(prior, 3)
    raw = np.exp(lp) * u
    return ep["max_rate"] * -np.expm1(-raw / ep["max_rate"])


def emergency_admissions(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    fr: Frailty,
    reg: Registrations,
    extract_day: int,
    impact_rng: np.random.Generator | None = None,
    ex: Exposure | None = None,
) -> tuple[np.ndarray, np.ndarray, Truth, np.ndarray]:
    """Hazard-driven emergency admissions over three 365-day windows ending on the extract
    date: (person, admission day), the truth for current patients, and the unobserved
    gamma frailty (which also raises GP appointment, A&E and outpatient rates).

    With ``ex``, the social prescribing peak of need and effect are laid over the hazard's
    admissions (phm.synth.impact; drawn from ``impact_rng``; the hazard's own feedback from
    prior admissions is unchanged) and the truth's probabilities include them."""
    ep = params["emergency"]
    n = len(dem.dob)
    shape = ep["gamma_shape"]
    u = rng.gamma(shape, 1.0 / shape, n)
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    prior = rng.poisson(_state_rate(params, dem, cond, fr, u, extract_day - 1095, np.zeros(n)))
    pids, days, rates = [], [], []
    rate = exposure = None
    for w in range(3):
        state_day = extract_day - 1095 + 365 * w
        lo = np.maximum(state_day + 1, dem.dob)
        hi = np.minimum(state_day + 365, last)
        exposure = np.maximum(hi - lo + 1, 0)
        rate = _state_rate(params, dem, cond, fr, u, state_day, prior)
        rates.append(rate)
        count = rng.poisson(rate * exposure / 365.0)
        pid = np.repeat(np.arange(n, dtype=np.int32), count)
        pids.append(pid)
        days.append(uniform_days(rng, lo[pid], hi[pid]))
        prior = count
    assert rate is not None and exposure is not None
    p_before = 1.0 - np.exp(-rate * exposure / 365.0)
    rate_after = _state_rate(params, dem, cond, fr, u, extract_day, prior)
    p_after = 1.0 - np.exp(-rate_after)
    em_pid, em_day = np.concatenate(pids), np.concatenate(days)
    if ex is not None and impact_rng is not None:
        by_window = np.stack([*rates, rate_after], axis=1) / 365.0  # per day
        first_day = extract_day - 1094

        def rate_at(p: np.ndarray, d: np.ndarray) -> np.ndarray:
            w = np.clip((d.astype(np.int64) - first_day) // 365, 0, 3)
            return by_window[p, w]

        em_pid, em_day = overlay(
            impact_rng,
            ex,
            "emergency_admissions",
            em_pid,
            em_day,
            rate_at,
            by_window[:, :3].max(axis=1),
            np.maximum(first_day, dem.dob),
            last,
        )
        # the truth's probabilities with the peak and the effect, for people with referrals
        sel = np.flatnonzero(ex.ref_count > 0)
        lo = np.maximum(extract_day - 364, dem.dob)
        lam = expected(
            ex,
            "emergency_admissions",
            sel,
            np.full(len(sel), extract_day - 364),
            365,
            True,
            lo,
            last,
        )
        p_before[sel] = 1.0 - np.exp(-lam)
        lam = expected(
            ex, "emergency_admissions", sel, np.full(len(sel), extract_day + 1), 365, True
        )
        p_after[sel] = 1.0 - np.exp(-lam)
    return em_pid, em_day, Truth(p_before, p_after), u


def _los(
    rng: np.random.Generator, median: np.ndarray, sigma: float, zero_share: float
) -> np.ndarray:
    los = np.floor(np.exp(np.log(median) + sigma * rng.normal(size=len(median))))
    los = np.where(rng.random(len(median)) < zero_share, 0, los)
    return np.minimum(los, 180).astype(np.int32)


def _pick(rng: np.random.Generator, weights: dict, n: int) -> np.ndarray:
    keys = np.asarray([str(k) for k in weights])
    return keys[sample_weighted(rng, list(weights.values()), n)]


def make_spells(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    fr: Frailty,
    reg: Registrations,
    em_pid: np.ndarray,
    em_day: np.ndarray,
    extract_day: int,
) -> Spells:
    ep, el, mp = params["emergency"], params["elective"], params["maternity"]
    window_lo = extract_day - 1094
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    age_e = (extract_day - dem.dob) / YEAR
    n = len(dem.dob)
    # terminal admissions for deaths in hospital
    died = np.flatnonzero(
        (reg.status == DIED) & (rng.random(n) < params["population"]["terminal_admission_prob"])
    )
    t_los = _los(rng, np.full(len(died), 5.0), 0.8, 0.05)
    t_adm = np.maximum(reg.death[died] - t_los, dem.dob[died])
    # elective
    n_ltc = cond.active(extract_day).sum(axis=1)
    cancer = cond.active(extract_day)[:, cond.index("cancer")]
    el_rate = el["rate_base"] * np.exp(el["rate_age"] * (np.clip(age_e, 0, 100) - 40))
    el_rate = np.minimum(el_rate * np.exp(el["per_ltc"] * n_ltc + el["cancer"] * cancer), 1.5)
    el_pid, el_day = poisson_events(rng, el_rate, np.maximum(window_lo, dem.dob), last)
    # maternity: women 16-45
    female_ok = (dem.sex == "F") & (age_e >= 17) & (age_e <= 46)
    m_pid, m_day = poisson_events(
        rng, np.where(female_ok, mp["birth_rate"], 0.0), np.full(n, window_lo), last
    )
    # newborns born in the window, and transfers in
    baby = (dem.dob >= window_lo) & (dem.dob <= extract_day)
    u = rng.random(n)
    nb82 = np.flatnonzero(baby & (u < mp["newborn_in_hospital_prob"]))
    nb83 = np.flatnonzero(baby & (u >= 1 - mp["newborn_outside_prob"]))
    tr_pid, tr_day = poisson_events(
        rng, np.full(n, mp["transfer_rate"]), np.maximum(window_lo, dem.dob), last
    )

    pid = np.concatenate([em_pid, died, el_pid, m_pid, nb82, nb83, tr_pid]).astype(np.int32)
    adm = np.concatenate(
        [em_day, t_adm, el_day, m_day, dem.dob[nb82], dem.dob[nb83], tr_day]
    ).astype(np.int32)
    kind = np.concatenate(
        [
            np.zeros(len(em_pid)),
            np.ones(len(died)),
            np.full(len(el_pid), 2),
            np.full(len(m_pid), 3),
            np.full(len(nb82) + len(nb83) + len(tr_pid), 4),
        ]
    ).astype(np.int8)
    m = len(pid)
    method = np.empty(m, dtype="U2")
    emerg = kind <= 1
    method[emerg] = _pick(rng, ep["method_weights"], int(emerg.sum()))
    method[kind == 2] = _pick(rng, el["method_weights"], int((kind == 2).sum()))
    mat = kind == 3
    method[mat] = np.where(rng.random(int(mat.sum())) < mp["postpartum_share"], "32", "31")
    o0 = len(em_pid) + len(died) + len(el_pid) + len(m_pid)
    method[o0 : o0 + len(nb82)] = "82"
    method[o0 + len(nb82) : o0 + len(nb82) + len(nb83)] = "83"
    method[o0 + len(nb82) + len(nb83) :] = "81"
    # length of stay
    age_adm = (adm - dem.dob[pid]) / YEAR
    med = params["emergency"]["los_median_days"]
    median = np.where(
        age_adm < 65, med["under65"], np.where(age_adm < 85, med["65to84"], med["85plus"])
    )
    los = _los(rng, median, ep["los_sigma"], 0.15)
    el_sel = kind == 2
    los[el_sel] = np.where(
        rng.random(int(el_sel.sum())) < el["day_case_prob"],
        0,
        _los(rng, np.full(int(el_sel.sum()), 2.0), 0.7, 0),
    )
    los[kind == 3] = np.floor(rng.random(int((kind == 3).sum())) * 4).astype(np.int32)
    los[kind == 4] = np.floor(rng.random(int((kind == 4).sum())) * 3).astype(np.int32)
    discharge = (adm + los).astype(np.int64)
    tk = kind == 1
    discharge[tk] = reg.death[pid[tk]]
    discharge = np.minimum(discharge, reg.death[pid])
    # providers
    provider = np.where(emerg, _pick(rng, ep["providers"], m), _pick(rng, el["providers"], m))
    # primary diagnosis (canonical)
    primary = np.empty(m, dtype="U4")
    e_idx = np.flatnonzero(emerg)
    primary[e_idx] = _emergency_primary(rng, params, cond, pid[e_idx], adm[e_idx], age_adm[e_idx])
    el_idx = np.flatnonzero(el_sel)
    el_codes = _pick(rng, el["primary"], len(el_idx))
    has_cancer = cond.active(adm[el_idx], pid[el_idx])[:, cond.index("cancer")]
    cc = np.empty(len(el_idx), dtype="U4")
    el_sex = dem.sex[pid[el_idx]]
    cdef = params["conditions"]["cancer"]
    for sx, key in (("M", "icd10_male"), ("F", "icd10_female")):
        sel = el_sex == sx
        codes = np.asarray(cdef.get(key, cdef["icd10"]))
        cc[sel] = codes[np.floor(rng.random(int(sel.sum())) * len(codes)).astype(int)]
    sel = (el_sex != "M") & (el_sex != "F")
    codes = np.asarray(cdef["icd10"])
    cc[sel] = codes[np.floor(rng.random(int(sel.sum())) * len(codes)).astype(int)]
    primary[el_idx] = np.where(has_cancer & (rng.random(len(el_idx)) < 0.5), cc, el_codes)
    primary[mat] = _pick(rng, mp["primary"], int(mat.sum()))
    newborn = (method == "82") | (method == "83")
    primary[newborn] = np.where(method[newborn] == "82", "Z380", "Z381")
    other = (kind == 4) & ~newborn
    primary[other] = _pick(
        rng, {k: v[1] for k, v in ep["generic_primary"].items()}, int(other.sum())
    )
    # codes that do not fit the patient's sex are replaced by a neutral one
    sx = dem.sex[pid]
    wrong = (np.isin(primary, ep["female_only"]) & (sx != "F")) | (
        np.isin(primary, ep["male_only"]) & (sx != "M")
    )
    primary = np.where(
        wrong, np.where(kind == 2, ep["neutral_elective"], ep["neutral_emergency"]), primary
    )
    # order by person and admission; a spell ends no later than the person's next admission
    order = np.lexsort((kind, adm, pid))
    pid, adm, discharge, method, provider, primary, kind = (
        a[order] for a in (pid, adm, discharge, method, provider, primary, kind)
    )
    same_next = np.zeros(m, dtype=bool)
    same_next[:-1] = pid[:-1] == pid[1:]
    nxt = np.empty(m, dtype=np.int64)
    nxt[:-1] = adm[1:]
    nxt[-1] = 2**40
    discharge = np.where(same_next, np.minimum(discharge, nxt), discharge)
    discharge = np.where(discharge > extract_day, -1, discharge)
    sp = Spells(pid, adm, discharge.astype(np.int32), method, provider, primary, kind)
    return sp


def discharges(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    reg: Registrations,
    sp: Spells,
    extract_day: int,
) -> Spells:
    """Contract v2: discharge method and destination for every spell, and transfers.

    - still in hospital at the extract date (no discharge_date): method ``8``, destination ``98``;
    - discharged on the day of the patient's death: died in hospital, ``4`` / ``79``;
    - otherwise ``1`` (or ``2``, self-discharge) to usual residence, a care home (more often
      when old), a hospice, or another hospital: a transfer, which is followed by a new
      emergency spell (``2B``) at another provider starting the same or the next day, whose own
      discharge is the real one (it may itself end in death or be unfinished).
    Returns a new :class:`Spells` sorted by person and admission.
    """
    dp = params["discharge"]
    death = reg.death[sp.pid]
    m = len(sp.pid)
    still = sp.discharge < 0
    died = ~still & (sp.discharge == death)
    alive = ~still & ~died
    # transfers: discharged alive from an emergency spell, room before the next admission
    nxt = np.full(m, 2**31 - 1, dtype=np.int64)
    same_next = np.zeros(m, dtype=bool)
    same_next[:-1] = sp.pid[:-1] == sp.pid[1:]
    nxt[:-1] = np.where(same_next[:-1], sp.admission[1:], nxt[:-1])
    gap = (rng.random(m) < dp["transfer_next_day_share"]).astype(np.int64)
    t_adm = sp.discharge.astype(np.int64) + gap
    transfer = (
        alive
        & (sp.kind <= 1)
        & (t_adm <= extract_day)
        & (t_adm < nxt)
        & (t_adm < death)
        & (rng.random(m) < dp["transfer_prob"])
    )
    ti = np.flatnonzero(transfer)
    t_los = _los(rng, np.full(len(ti), float(dp["transfer_los_median_days"])), 0.8, 0.0)
    t_dis = np.minimum(t_adm[ti] + t_los, np.minimum(nxt[ti], death[ti]))
    t_dis = np.where(t_dis > extract_day, -1, t_dis)
    providers = np.asarray([str(k) for k in dp["transfer_providers"]])
    t_prov = providers[np.floor(rng.random(len(ti)) * len(providers)).astype(int)]
    t_prov = np.where(t_prov == sp.provider[ti], providers[0], t_prov)
    t_prov = np.where(t_prov == sp.provider[ti], providers[-1], t_prov)
    pid = np.concatenate([sp.pid, sp.pid[ti]])
    adm = np.concatenate([sp.admission, t_adm[ti]]).astype(np.int32)
    dis = np.concatenate([sp.discharge, t_dis]).astype(np.int32)
    method = np.concatenate([sp.method, np.full(len(ti), "2B", dtype="U2")])
    provider = np.concatenate([sp.provider.astype(str), t_prov.astype(str)])
    primary = np.concatenate([sp.primary, sp.primary[ti]])
    kind = np.concatenate([sp.kind, np.full(len(ti), 5, dtype=np.int8)])
    is_transfer = np.concatenate([transfer, np.zeros(len(ti), dtype=bool)])
    n = len(pid)
    death = reg.death[pid]
    still = dis < 0
    died = ~still & (dis == death)
    self_discharge = rng.random(n) < dp["self_discharge_share"]
    d_method = np.where(still, "8", np.where(died, "4", np.where(self_discharge, "2", "1")))
    age = (adm - dem.dob[pid]) / YEAR
    dest = _pick(rng, dp["destination_weights"], n).astype("U2")
    care = age >= 75
    to_care = care & (rng.random(n) < dp["care_home_share_75plus"])
    dest = np.where(to_care, _pick(rng, dp["care_home_codes"], n), dest)
    # transfers only where there is a following spell
    dest = np.where(np.isin(dest, list(dp["other_hospital_codes"])), "19", dest)
    dest = np.where(is_transfer, _pick(rng, dp["other_hospital_codes"], n), dest)
    dest = np.where(still, "98", np.where(died, "79", dest))
    order = np.lexsort((kind, adm, pid))
    return Spells(
        pid[order],
        adm[order],
        dis[order],
        method[order],
        provider[order],
        primary[order],
        kind[order],
        d_method[order],
        dest[order],
    )


def gp_death_lag(
    rng: np.random.Generator, params: dict, reg: Registrations, sp: Spells, extract_day: int
) -> np.ndarray:
    """People who died in hospital recently whose GP record does not show the death yet at
    the extract date (``date_of_death`` and ``registration_end`` still empty): a death within
    ``gp_death_lag_days`` of the extract date, with probability ``gp_death_lag_prob``."""
    dp = params["discharge"]
    n = len(reg.death)
    died_h = np.zeros(n, dtype=bool)
    died_h[sp.pid[sp.discharge_method == "4"]] = True
    recent = (reg.death <= extract_day) & (reg.death > extract_day - dp["gp_death_lag_days"])
    return died_h & recent & (rng.random(n) < dp["gp_death_lag_prob"])


def _emergency_primary(
    rng: np.random.Generator,
    params: dict,
    cond: Conditions,
    pid: np.ndarray,
    adm: np.ndarray,
    age: np.ndarray,
) -> np.ndarray:
    ep = params["emergency"]
    cpri = ep["condition_primary"]
    ckeys = list(cpri)
    kidx = [cond.index(k) for k in ckeys]
    act = cond.active(adm, pid)[:, kidx]
    generic_w = 3.0
    w = np.concatenate(
        [act * np.array([cpri[k]["weight"] for k in ckeys]), np.full((len(pid), 1), generic_w)],
        axis=1,
    )
    choice = sample_rows(rng, w, np.arange(len(pid)))
    out = np.empty(len(pid), dtype="U4")
    for j, k in enumerate(ckeys):
        sel = np.flatnonzero(choice == j)
        codes = np.asarray(cpri[k]["icd10"])
        out[sel] = codes[np.floor(rng.random(len(sel)) * len(codes)).astype(int)]
    gsel = np.flatnonzero(choice == len(ckeys))
    gcodes = np.asarray(list(ep["generic_primary"]))
    gw = np.array([ep["generic_primary"][c] for c in gcodes], dtype=float).T  # (3, n_codes)
    group = np.where(age[gsel] < 16, 0, np.where(age[gsel] < 65, 1, 2))
    out[gsel] = gcodes[sample_rows(rng, gw, group)]
    return out


def secondary_diagnoses(
    rng: np.random.Generator,
    params: dict,
    sex: np.ndarray,
    cond: Conditions,
    fr: Frailty,
    sp: Spells,
) -> np.ndarray:
    """';'-joined secondary diagnoses per spell ('' = none), in SUS's messy forms."""
    ep = params["emergency"]
    cp = params["conditions"]
    m = len(sp.pid)
    act = cond.active(sp.admission, sp.pid)
    rows, cols = np.nonzero(act & (rng.random(act.shape) < 0.85))
    male = sex[sp.pid[rows]] == "M"
    female = sex[sp.pid[rows]] == "F"
    # stable per person: first code usually, the others for some people
    h = (sp.pid[rows].astype(np.int64) * 2654435761 % 1000) / 1000.0
    sec = np.empty(len(rows), dtype="U4")
    for j, key in enumerate(cond.keys):
        c = cp[key]
        for mask, codes in (
            (male, c.get("icd10_male", c["icd10"])),
            (female, c.get("icd10_female", c["icd10"])),
            (~male & ~female, c["icd10"]),
        ):
            sel = (cols == j) & mask
            k = np.where(
                h[sel] < 0.9, 0, 1 + np.floor((h[sel] - 0.9) / 0.1 * (len(codes) - 1)).astype(int)
            )
            sec[sel] = np.asarray(codes)[np.minimum(k, len(codes) - 1)]
    # Hospital Frailty Risk Score codes for frail (older) patients
    defs = deficits_at(cond, fr, sp.admission, sp.pid)
    n_h = rng.poisson(ep["hfrs_per_deficit"] * defs * (defs >= 3))
    h_rows = np.repeat(np.arange(m), n_h)
    hcodes = np.asarray(ep["hfrs_codes"])
    h_codes = hcodes[np.floor(rng.random(len(h_rows)) * len(hcodes)).astype(int)]
    all_rows = np.concatenate([rows, h_rows])
    all_codes = np.concatenate([sec, h_codes])
    forms = sample_weighted(rng, [0.45, 0.3, 0.12, 0.13], len(all_codes))
    messy = icd10_messy(all_codes, forms, set(ep["asterisk_codes"]))
    df = (
        pl.DataFrame({"row": all_rows.astype(np.int64), "code": all_codes, "messy": messy})
        .unique(subset=["row", "code"], keep="first", maintain_order=True)
        .sort("row", maintain_order=True)
        .group_by("row", maintain_order=True)
        .agg(pl.col("messy").head(23).str.join(";"))
    )
    out = np.full(m, "", dtype=object)
    out[df["row"].to_numpy()] = df["messy"].to_numpy()
    return out


@dataclass
class EdAttendances:
    pid: np.ndarray
    arrival_s: np.ndarray  # seconds since epoch
    department: np.ndarray  # index into department_keys
    provider: np.ndarray  # index into provider_keys
    complaint: np.ndarray  # index into complaint_keys, -1 = null
    admitted: np.ndarray
    department_keys: list[str]
    provider_keys: list[str]
    complaint_keys: list[str]


def make_ecds(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    sp: Spells,
    u_frailty: np.ndarray,
    extract_day: int,
    impact_rng: np.random.Generator | None = None,
    ex: Exposure | None = None,
) -> EdAttendances:
    """A&E attendances: a Poisson process per person (with ``ex``, the social prescribing
    overlay, phm.synth.impact) plus one admitted attendance per spell admitted via A&E."""
    ed = params["ecds"]
    window_lo = extract_day - 1094
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    age = (extract_day - dem.dob) / YEAR
    act = cond.active(extract_day)
    mh = act[:, [cond.index(k) for k in MH_KEYS]].any(axis=1)
    rate = interp_knots(ed["base_knots"], np.clip(age, 0, 110))
    rate = rate * np.exp(
        ed["dep"] * dem.dep + ed["mental_health"] * mh + ed["per_ltc"] * act.sum(axis=1)
    )
    rate = rate * u_frailty ** ed["frailty_power"]
    pid, day = poisson_events(rng, rate, np.maximum(window_lo, dem.dob), last)
    if ex is not None and impact_rng is not None:
        pid, day = overlay(
            impact_rng,
            ex,
            "ae_attendances",
            pid,
            day,
            lambda p, d: rate[p] / YEAR,
            rate / YEAR,
            np.maximum(window_lo, dem.dob),
            last,
        )
    # admitted attendances: emergency spells admitted via A&E (method 21)
    via_ae = sp.method == "21"
    a_pid, a_day = sp.pid[via_ae], sp.admission[via_ae]
    all_pid = np.concatenate([pid, a_pid]).astype(np.int32)
    all_day = np.concatenate([day, a_day]).astype(np.int64)
    admitted = np.concatenate([np.zeros(len(pid), bool), np.ones(len(a_pid), bool)])
    hours = sample_weighted(rng, ed["hour_weights"], len(all_pid))
    secs = hours * 3600 + np.floor(rng.random(len(all_pid)) * 3600).astype(np.int64)
    arrival = all_day * 86400 + secs
    dkeys = [str(k) for k in ed["department_weights"]]
    dept = np.where(
        admitted,
        dkeys.index("01"),
        sample_weighted(rng, list(ed["department_weights"].values()), len(all_pid)),
    )
    pkeys = [str(k) for k in ed["providers"]]
    provider = sample_weighted(rng, list(ed["providers"].values()), len(all_pid))
    ckeys = [str(k) for k in ed["chief_complaints"]]
    if not all(is_valid_sctid(c) for c in ckeys):
        raise ValueError("ecds.chief_complaints: every code must be a valid SNOMED CT id")
    complaint = sample_weighted(rng, list(ed["chief_complaints"].values()), len(all_pid))
    complaint[rng.random(len(all_pid)) < ed["chief_complaint_null_rate"]] = -1
    order = np.lexsort((admitted, arrival, all_pid))
    return EdAttendances(
        all_pid[order],
        arrival[order],
        dept[order],
        provider[order],
        complaint[order],
        admitted[order],
        dkeys,
        pkeys,
        ckeys,
    )


@dataclass
class Outpatients:
    pid: np.ndarray
    day: np.ndarray
    status: np.ndarray
    tfc: np.ndarray


def make_outpatients(
    rng: np.random.Generator,
    params: dict,
    dem: Demography,
    cond: Conditions,
    reg: Registrations,
    low_engagement: np.ndarray,
    u_frailty: np.ndarray,
    extract_day: int,
) -> Outpatients:
    op = params["outpatients"]
    cp = params["conditions"]
    window_lo = extract_day - 1094
    last = np.where(reg.status == CURRENT, extract_day, reg.end)
    age = (extract_day - dem.dob) / YEAR
    act_e = cond.active(extract_day)
    rate = (
        op["rate_base"]
        * np.exp(op["rate_age"] * (np.clip(age, 0, 100) - 40))
        * (1 + op["per_ltc"] * act_e.sum(axis=1))
        * u_frailty ** op["frailty_power"]
    )
    pid, day = poisson_events(rng, rate, np.maximum(window_lo, dem.dob), last)
    m = len(pid)
    # treatment function: a specialty of a condition the patient has (by the extract date), or
    # a generic one
    act = act_e[pid]
    has_tfc = np.array([bool(cp[k].get("op_tfc")) for k in cond.keys])
    w = act & has_tfc[None, :]
    use_cond = w.any(axis=1) & (rng.random(m) < 0.6)
    tfc = np.empty(m, dtype="U3")
    ci = np.flatnonzero(use_cond)
    if len(ci):
        pick = sample_rows(rng, w[ci].astype(float), np.arange(len(ci)))
        for j, k in enumerate(cond.keys):
            sel = ci[pick == j]
            codes = np.asarray(cp[k].get("op_tfc") or ["300"])
            tfc[sel] = codes[np.floor(rng.random(len(sel)) * len(codes)).astype(int)]
    gi = np.flatnonzero(~use_cond)
    child = (day[gi] - dem.dob[pid[gi]]) / YEAR < 16
    tfc[gi[child]] = _pick(rng, op["child_tfc"], int(child.sum()))
    tfc[gi[~child]] = _pick(rng, op["generic_tfc"], int((~child).sum()))
    # attendance status, more DNAs with deprivation and low engagement
    keys, _ = weights_cum(op["status_weights"])
    base = np.array([op["status_weights"][k] for k in keys], dtype=float)
    dna_col = keys.index("3")
    probs = np.tile(base, (m, 1))
    probs[:, dna_col] *= np.exp(op["dna_dep"] * dem.dep[pid]) * np.where(
        low_engagement[pid], 3.0, 1.0
    )
    status = np.asarray(keys)[sample_rows(rng, probs, np.arange(m))]
    order = np.lexsort((tfc, day, pid))
    return Outpatients(pid[order], day[order], status[order], tfc[order])
