"""Need by area: population, cohorts, prevalence and service-use rates per LSOA, MSOA and IMD
group.

For every PCN, and for all PCNs together (``pcn_code = 'ALL'``), per LSOA 2011, per MSOA 2011
(``msoa11_name``, derived from the LSOA names: :func:`geo.reference.msoa11_name_from_lsoa`;
the maps fall back to it where most LSOAs are suppressed), per IMD 2019 decile and per IMD 2019
quintile, from ``marts.patient_measures`` (one row per currently
registered patient) and ``marts.cohort_members``:

* ``population`` — registered patients;
* ``cohort_<id>_n`` — members of each cohort (patients in ``marts.cohort_members`` who are
  in ``marts.patient_measures``; distinct people);
* each :data:`PREVALENCES` measure (``data/definitions/prevalences.yaml``; numerator and
  denominator are rules of the cohort language): ``<id>_n`` (numerator), ``<id>_denominator``,
  ``<id>_pct`` with Wilson 95% limits ``<id>_pct_lcl95`` / ``<id>_pct_ucl95``;
* each :data:`EVENT_RATES` measure: ``<id>_n`` (events in the last 12 months),
  ``<id>_crude_per_1000`` with Poisson limits (Byar's, exact below 10 events),
  ``<id>_dsr_per_1000`` directly age-standardised to ESP 2013 with Dobson limits — see
  :mod:`geo.rates` for the methods and citations.

Raw tables (internal, exact numbers): ``geo.need_by_lsoa``, ``geo.need_by_msoa``,
``geo.need_by_imd_decile``,
``geo.need_by_imd_quintile``. Published tables (``..._published``, :func:`publish`): every
count protected JOINTLY across the four tables (:func:`protect_need_counts`, through
:func:`phm.disclosure.protect_linked_tables`; text: ``*`` or rounded; primary and secondary
suppression over ALL > PCN, the areas of each PCN, and the nesting of the levels: an MSOA or
decile is the sum of its LSOAs, a quintile of its two deciles), every rate, percentage and
limit recomputed from the protected counts (DSRs from per-age-band counts rounded to 5) and
shown through :func:`phm.disclosure.protect_rate` (null when a count it rests on is
suppressed or the protected numerator is below 10), rounded to 1 decimal place. Only
published values leave the warehouse (GeoPackages, maps).

Patients with no LSOA (or an LSOA outside England's IMD file) are counted in a row with a
null ``lsoa11_code`` / IMD group, so totals add up; those rows are never mapped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import geopandas as gpd
import polars as pl

from geo.rates import age_standardised_rates, with_crude_rate, with_proportion
from geo.reference import load_lsoa_boundaries, lsoa_msoa_lookup
from phm.disclosure import (
    SUPPRESSED,
    DisclosurePolicy,
    protect_linked_tables,
    protect_rate,
    protect_table,
    round_counts,
)
from phm.imd import load_imd2019
from phm.prevalences import Prevalence, load_prevalences, prevalence_flags_sql
from phm.warehouse import write_table

PATIENTS_TABLE = "marts.patient_measures"
COHORTS_TABLE = "marts.cohort_members"
PRACTICES_TABLE = "staging.practices"
#: the pseudonymous person key shared by the measures and cohort marts
PERSON_KEY = "person_id"
ALL_PCNS = "ALL"
UNKNOWN_PCN = "UNKNOWN"
RATE_MULTIPLIER = 1000
RATE_DECIMALS = 1


@dataclass(frozen=True)
class EventRate:
    """Events per 1,000 registered patients per year from an integer count ``column``."""

    id: str
    label: str
    column: str
    definition: str


#: Prevalence measures: data/definitions/prevalences.yaml (rules of the cohort language).
PREVALENCES: tuple[Prevalence, ...] = load_prevalences()

#: Service-use rates (edit here to follow renamed count columns).
EVENT_RATES: tuple[EventRate, ...] = (
    EventRate(
        "emergency_admissions",
        "Emergency admissions",
        "emergency_admissions_12m",
        "Emergency hospital admissions (admission method 21-28) in the last 12 months per "
        "1,000 registered patients.",
    ),
    EventRate(
        "ae_attendances",
        "A&E attendances",
        "ae_attendances_12m",
        "A&E attendances (all department types) in the last 12 months per 1,000 registered "
        "patients.",
    ),
)

#: area level -> (column in marts.patient_measures, table stem)
LEVELS: dict[str, tuple[str, str]] = {
    "lsoa": ("lsoa11_code", "geo.need_by_lsoa"),
    "msoa": ("msoa11_name", "geo.need_by_msoa"),
    "imd_decile": ("imd2019_decile", "geo.need_by_imd_decile"),
    "imd_quintile": ("imd2019_quintile", "geo.need_by_imd_quintile"),
}
PUBLISHED_SUFFIX = "_published"
#: the lookup LSOA 2011 -> MSOA 2011 name, registered on the connection when needed
LSOA_MSOA_VIEW = "phm_lsoa11_msoa11"
#: levels not in marts.patient_measures: level -> SQL of the area from the patient's LSOA
DERIVED_AREAS: dict[str, str] = {
    "msoa": f"(SELECT l.msoa11_name FROM {LSOA_MSOA_VIEW} l WHERE l.lsoa11_code = pm.lsoa11_code)"
}


def published_table(level: str) -> str:
    return LEVELS[level][1] + PUBLISHED_SUFFIX


# ------------------------------------------------------------------------------ columns


def rate_columns(r: EventRate) -> dict[str, tuple[str, str, str]]:
    return {
        "crude": (f"{r.id}_crude_per_1000", f"{r.id}_crude_lcl95", f"{r.id}_crude_ucl95"),
        "dsr": (f"{r.id}_dsr_per_1000", f"{r.id}_dsr_lcl95", f"{r.id}_dsr_ucl95"),
    }


def prevalence_columns(p: Prevalence) -> tuple[str, str, str]:
    return (f"{p.id}_pct", f"{p.id}_pct_lcl95", f"{p.id}_pct_ucl95")


def cohort_column(cohort_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", str(cohort_id).lower()).strip("_")
    return f"cohort_{slug or 'unnamed'}_n"


def count_columns(
    df: pl.DataFrame,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
) -> list[str]:
    """Every count column of a need table (the ones published through protect_table)."""
    cols = ["population"]
    cols += [c for c in df.columns if c.startswith("cohort_") and c.endswith("_n")]
    for p in prevalences:
        cols += [f"{p.id}_n", f"{p.id}_denominator"]
    cols += [f"{r.id}_n" for r in rates]
    return cols


def rate_events(
    prevalences: Sequence[Prevalence] = PREVALENCES, rates: Sequence[EventRate] = EVENT_RATES
) -> dict[str, str]:
    """Every rate-like column -> the count column it rests on (for protect_rate)."""
    out: dict[str, str] = {}
    for p in prevalences:
        for c in prevalence_columns(p):
            out[c] = f"{p.id}_n"
    for r in rates:
        for names in rate_columns(r).values():
            for c in names:
                out[c] = f"{r.id}_n"
    return out


# ------------------------------------------------------------------------------ compute


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    schema, name = table.split(".")
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return [r[0] for r in rows]


def cohort_members_sql(con: duckdb.DuckDBPyConnection) -> str:
    """SQL giving distinct ``(cohort_id, person_id)`` rows of ``marts.cohort_members``, after
    checking that both marts carry ``person_id``."""
    for table in (PATIENTS_TABLE, COHORTS_TABLE):
        if PERSON_KEY not in _columns(con, table):
            raise LookupError(
                f"{table} has no {PERSON_KEY} column: cohorts and measures are joined on the "
                "pseudonymous person_id (rebuild them with this version)"
            )
    return f"SELECT DISTINCT CAST(cohort_id AS VARCHAR) AS cohort_id, {PERSON_KEY} FROM {COHORTS_TABLE}"


def _check_inputs(con, prevalences, rates) -> None:
    cols = set(_columns(con, PATIENTS_TABLE))
    if not cols:
        raise LookupError(f"{PATIENTS_TABLE} is missing; build the measures first")
    if PERSON_KEY not in cols:
        cohort_members_sql(con)  # raises, naming the table that lacks person_id
    need = {"age", "pcn_code", "lsoa11_code", "imd2019_decile", "imd2019_quintile"}
    need |= {r.column for r in rates}
    missing = sorted(need - cols)
    if missing:
        raise LookupError(
            f"{PATIENTS_TABLE} lacks column(s) {', '.join(missing)}; adjust geo.need.EVENT_RATES"
        )


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def cohort_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    if not _columns(con, COHORTS_TABLE):
        return []
    return [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT CAST(cohort_id AS VARCHAR) FROM {COHORTS_TABLE} ORDER BY 1"
        ).fetchall()
    ]


def _area_sql(con, level: str) -> str:
    """SQL of the patient's area at ``level`` (the MSOA from the LSOA's name, see
    :func:`geo.reference.msoa11_name_from_lsoa`)."""
    if level not in DERIVED_AREAS:
        return f"pm.{LEVELS[level][0]}"
    con.register(LSOA_MSOA_VIEW, lsoa_msoa_lookup().to_arrow())
    return DERIVED_AREAS[level]


def _patient_columns(areas: list[str], rates) -> list[str]:
    return [
        f"coalesce(CAST(pm.pcn_code AS VARCHAR), {_sql_str(UNKNOWN_PCN)}) AS pcn_code",
        *areas,
        "CASE WHEN pm.age IS NULL OR pm.age < 0 THEN NULL "
        "ELSE CAST(least(floor(pm.age / 5), 18) AS INTEGER) END AS band",
        *(f"CAST(coalesce(pm.{r.column}, 0) AS BIGINT) AS {r.id}_n" for r in rates),
    ]


def _patients_cte(con, level: str, prevalences, rates, patients: str | None = None) -> str:
    """SQL of the patients with their ``area`` at ``level``, age ``band``, prevalence flags
    and event counts; from ``patients`` (:func:`_materialise_patients`) when given."""
    if patients is not None:
        every = ", ".join(f"area_{lvl}" for lvl in LEVELS)
        return f"SELECT * EXCLUDE ({every}), area_{level} AS area FROM {patients}"
    cols = [
        "pm.* EXCLUDE (pcn_code)",
        *_patient_columns([f"{_area_sql(con, level)} AS area"], rates),
    ]
    return prevalence_flags_sql(con, tuple(prevalences), cols)


#: the temporary table :func:`build_need_tables` sums every level from
NEED_PATIENTS = "_geo_need_patients"


def _materialise_patients(con, prevalences, rates) -> str:
    """The columns of :func:`_patients_cte` that the need tables sum, for every level at once
    (``area_<level>``), as the temporary table :data:`NEED_PATIENTS`: the prevalence flags are
    worked out once instead of twice per level. Holds the pseudonymous ``person_id`` only."""
    _check_inputs(con, prevalences, rates)
    areas = [f"{_area_sql(con, lvl)} AS area_{lvl}" for lvl in LEVELS]
    cols = [f"pm.{PERSON_KEY}", *_patient_columns(areas, rates)]
    sql = prevalence_flags_sql(con, tuple(prevalences), cols)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {NEED_PATIENTS} AS {sql}")
    return NEED_PATIENTS


def _grouped_pcn() -> str:
    return f"CASE WHEN grouping(pcn_code) = 1 THEN {_sql_str(ALL_PCNS)} ELSE pcn_code END"


def need_strata(
    con: duckdb.DuckDBPyConnection,
    level: str,
    *,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
    patients: str | None = None,
) -> pl.DataFrame:
    """Exact counts per (``pcn_code``, ``area``, ESP 2013 age ``band``), PCN rows and ``ALL``:
    the strata the raw table is summed from (internal). ``patients``: the patients' table
    of :func:`_materialise_patients`, if already made."""
    _check_inputs(con, prevalences, rates)
    cte = _patients_cte(con, level, prevalences, rates, patients)
    sums = ["count(*) AS population"]
    for p in prevalences:
        sums += [f"sum({p.id}_n) AS {p.id}_n", f"sum({p.id}_denominator) AS {p.id}_denominator"]
    sums += [f"sum({r.id}_n) AS {r.id}_n" for r in rates]
    strata = con.execute(
        f"""
        WITH pm AS ({cte})
        SELECT {_grouped_pcn()} AS pcn_code, area, band, {", ".join(sums)}
        FROM pm
        GROUP BY GROUPING SETS ((pcn_code, area, band), (area, band))
        """
    ).pl()
    count_cols = [c for c in strata.columns if c not in ("pcn_code", "area", "band")]
    # sorted: the rates summed from the strata (floating point) are the same on every run
    return strata.with_columns(pl.col(c).cast(pl.Int64) for c in count_cols).sort(
        "pcn_code", "area", "band", nulls_last=True
    )


def compute_need(
    con: duckdb.DuckDBPyConnection,
    level: str,
    *,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
    strata: pl.DataFrame | None = None,
    patients: str | None = None,
) -> pl.DataFrame:
    """The raw need table of one ``level`` (``lsoa``, ``msoa``, ``imd_decile``, ``imd_quintile``).

    One row per (``pcn_code``, area), PCN rows first then ``ALL``, sorted; exact numbers.
    ``strata``: :func:`need_strata` of the same level, if already computed; ``patients``:
    the patients' table of :func:`_materialise_patients`, if already made."""
    area_col, _ = LEVELS[level]
    _check_inputs(con, prevalences, rates)
    cte = _patients_cte(con, level, prevalences, rates, patients)
    if strata is None:
        strata = need_strata(con, level, prevalences=prevalences, rates=rates, patients=patients)
    keys = ["pcn_code", "area"]
    count_cols = [c for c in strata.columns if c not in (*keys, "band")]
    totals = strata.group_by(keys).agg(pl.col(c).sum() for c in count_cols)

    # cohorts
    ids = cohort_ids(con)
    if ids:
        members_sql, key = cohort_members_sql(con), PERSON_KEY
        names = [cohort_column(i) for i in ids]
        if len(set(names)) != len(names):
            raise ValueError(f"cohort ids collide as column names: {ids}")
        filt = ", ".join(
            f"count(DISTINCT pm.{key}) FILTER (WHERE c.cohort_id = {_sql_str(i)}) AS {n}"
            for i, n in zip(ids, names, strict=True)
        )
        coh = con.execute(
            f"""
            WITH pm AS ({cte}),
                 c AS ({members_sql})
            SELECT {_grouped_pcn()} AS pcn_code, area, {filt}
            FROM c JOIN pm USING ({key})
            GROUP BY GROUPING SETS ((pcn_code, area), (area))
            """
        ).pl()
        coh = coh.with_columns(pl.col(n).cast(pl.Int64) for n in names)
        totals = totals.join(coh, on=keys, how="left", nulls_equal=True).with_columns(
            pl.col(n).fill_null(0) for n in names
        )

    for p in prevalences:
        totals = with_proportion(totals, f"{p.id}_n", f"{p.id}_denominator", prevalence_columns(p))
    for r in rates:
        totals = with_crude_rate(
            totals, f"{r.id}_n", "population", rate_columns(r)["crude"], RATE_MULTIPLIER
        )
    dsr = age_standardised_rates(
        strata.filter(pl.col("band").is_not_null()),
        keys,
        {f"{r.id}_n": rate_columns(r)["dsr"] for r in rates},
        population="population",
        band="band",
        multiplier=RATE_MULTIPLIER,
    )
    out = totals.join(dsr, on=keys, how="left", nulls_equal=True)

    # order columns: keys, population, cohorts, then each measure's block
    cols = ["pcn_code", "area", "population", *[c for c in out.columns if c.startswith("cohort_")]]
    for p in prevalences:
        cols += [f"{p.id}_n", f"{p.id}_denominator", *prevalence_columns(p)]
    for r in rates:
        cols += [f"{r.id}_n", *rate_columns(r)["crude"], *rate_columns(r)["dsr"]]
    out = out.select(cols).rename({"area": area_col})
    out = out.with_columns((pl.col("pcn_code") == ALL_PCNS).alias("_all")).sort(
        ["_all", "pcn_code", area_col], nulls_last=True
    )
    out = out.drop("_all")
    return _decorate(con, out, level)


def _decorate(con, df: pl.DataFrame, level: str) -> pl.DataFrame:
    """Add PCN names, and LSOA names / IMD for the LSOA level (from the public IMD file)."""
    names = pl.DataFrame({"pcn_code": [ALL_PCNS], "pcn_name": ["All PCNs"]})
    if _columns(con, PRACTICES_TABLE):
        pr = con.execute(
            f"SELECT pcn_code, min(pcn_name) AS pcn_name FROM {PRACTICES_TABLE} "
            "WHERE pcn_code IS NOT NULL GROUP BY pcn_code"
        ).pl()
        names = pl.concat([names, pr.select(pl.col("pcn_code").cast(pl.String), "pcn_name")])
    df = df.join(names, on="pcn_code", how="left")
    front = ["pcn_code", "pcn_name", LEVELS[level][0]]
    if level == "lsoa":
        imd = load_imd2019().select(
            "lsoa11_code",
            "lsoa11_name",
            pl.col("imd_decile").alias("imd2019_decile"),
            pl.col("imd_quintile").alias("imd2019_quintile"),
        )
        df = df.join(imd, on="lsoa11_code", how="left")
        front += ["lsoa11_name", "imd2019_decile", "imd2019_quintile"]
    return df.select(front + [c for c in df.columns if c not in front])


def _area_column(df: pl.DataFrame) -> str:
    for col, _ in LEVELS.values():
        if col in df.columns:
            return col
    raise ValueError("not a need table: no area column")


def publish(
    df: pl.DataFrame,
    policy: DisclosurePolicy | None = None,
    *,
    strata: pl.DataFrame | None = None,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
    protected: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The published version of a raw need table. Column names and order are unchanged.

    * Counts: ``protected`` (the table's counts protected jointly with the other levels by
      :func:`protect_need_counts`, as Int64 with null where suppressed) when given — as
      :func:`build_need_tables` does; otherwise this table alone through
      :func:`phm.disclosure.protect_table`: the PCN rows of an area add up to its ``ALL``
      row, and the areas of a PCN add up to the PCN's population (published elsewhere), so
      suppression is primary and secondary over both — but not across the levels.
    * Every percentage, crude rate and limit is recomputed from the **protected** counts
      (rounded numerator and denominator), so it reveals nothing the counts do not; it is
      null where a count it rests on is suppressed or the protected numerator is below
      ``min_rate_events`` (:func:`phm.disclosure.protect_rate`).
    * DSRs and their limits are computed from the per-age-band counts of ``strata``
      (:func:`need_strata`) each rounded to the nearest ``round_to`` and shown under the
      same rule; null when ``strata`` is not given.
    * Rates rounded to 1 decimal place."""
    policy = policy or DisclosurePolicy.from_env()
    area_col = _area_column(df)
    counts = [c for c in count_columns(df, prevalences, rates) if c in df.columns]
    if protected is None:
        prot = protect_table(
            df, counts, ["pcn_code"], margins=[area_col], policy=policy, as_text=False
        )
    else:
        if protected.height != df.height or not protected.select("pcn_code", area_col).equals(
            df.select("pcn_code", area_col)
        ):
            raise ValueError("protected counts do not match the rows of the need table")
        prot = df.with_columns(protected[c] for c in counts)
    filled = prot.with_columns(pl.col(c).fill_null(0) for c in counts)
    for p in prevalences:
        filled = with_proportion(filled, f"{p.id}_n", f"{p.id}_denominator", prevalence_columns(p))
    for r in rates:
        filled = with_crude_rate(
            filled, f"{r.id}_n", "population", rate_columns(r)["crude"], RATE_MULTIPLIER
        )
    keys = ["pcn_code", area_col]
    dsr_cols = [c for r in rates for c in rate_columns(r)["dsr"]]
    if strata is not None:
        band_counts = [c for c in strata.columns if c not in ("pcn_code", "area", "band")]
        rounded = strata.filter(pl.col("band").is_not_null()).with_columns(
            round_counts(pl.col(c), policy) for c in band_counts
        )
        dsr = age_standardised_rates(
            rounded,
            ["pcn_code", "area"],
            {f"{r.id}_n": rate_columns(r)["dsr"] for r in rates},
            population="population",
            band="band",
            multiplier=RATE_MULTIPLIER,
        ).rename({"area": area_col})
        # the DSR also needs enough events left after rounding the bands (a band of 1-2 events
        # rounds to 0): hidden when their total is below min_rate_events
        band_events = rounded.group_by("pcn_code", "area").agg(
            pl.col(f"{r.id}_n").sum().alias(f"_bands_{r.id}") for r in rates
        )
        dsr = dsr.join(
            band_events.rename({"area": area_col}), on=keys, how="left", nulls_equal=True
        ).with_columns(
            pl.when(pl.col(f"_bands_{r.id}") >= policy.min_rate_events)
            .then(pl.col(c))
            .otherwise(None)
            .alias(c)
            for r in rates
            for c in rate_columns(r)["dsr"]
        )
        filled = filled.drop(dsr_cols).join(
            dsr.select(*keys, *dsr_cols),
            on=keys,
            how="left",
            nulls_equal=True,
            maintain_order="left",
        )
    else:
        filled = filled.with_columns(pl.lit(None, pl.Float64).alias(c) for c in dsr_cols)
    # a rate rests on its numerator and on its denominator (population for event rates)
    rests_on = rate_events(prevalences, rates)
    denominators = {c: f"{p.id}_denominator" for p in prevalences for c in prevalence_columns(p)}
    exprs = []
    for c in df.columns:
        if c in counts:
            exprs.append(
                pl.when(df[c].is_null())
                .then(pl.lit(None, pl.String))
                .when(prot[c].is_null())
                .then(pl.lit(SUPPRESSED))
                .otherwise(prot[c].cast(pl.String))
                .alias(c)
            )
        elif c in rests_on:
            events = prot[rests_on[c]]
            base = prot[denominators.get(c, "population")]
            shown = pl.when(pl.lit(base).is_not_null()).then(pl.lit(events)).otherwise(None)
            exprs.append(
                protect_rate(pl.lit(filled[c]).round(RATE_DECIMALS), shown, policy).alias(c)
            )
        else:
            exprs.append(pl.lit(df[c]).alias(c))
    return df.select(exprs)


#: name of the PCN totals (published elsewhere) in the joint protection of the need tables
PCN_TOTALS = "pcn_total"


def area_mapping(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every LSOA (null included) of ``marts.patient_measures`` with its MSOA, IMD decile and
    IMD quintile, computed with the same area SQL as the tables (:func:`_area_sql`): one row
    per LSOA. Raises ``ValueError`` when an LSOA maps to two areas of a level, or a decile
    to two quintiles (the tables would then not nest; no values are named)."""
    cols = {lvl: _area_sql(con, lvl) for lvl in LEVELS}
    mapping = con.execute(
        f"SELECT DISTINCT {', '.join(f'{sql} AS {lvl}' for lvl, sql in cols.items())} "
        f"FROM {PATIENTS_TABLE} pm"
    ).pl()
    check_area_mapping(mapping)
    return mapping.sort("lsoa", nulls_last=True)


def check_area_mapping(mapping: pl.DataFrame) -> None:
    """Raise ``ValueError`` unless every LSOA has one MSOA and one IMD group and every decile
    one quintile (the message names no value)."""
    if mapping.select("lsoa").is_duplicated().any():
        raise ValueError(
            f"{PATIENTS_TABLE}: some LSOA has more than one MSOA or IMD group; the need tables "
            "cannot be protected jointly"
        )
    deciles = mapping.select("imd_decile", "imd_quintile").unique()
    if deciles.select("imd_decile").is_duplicated().any():
        raise ValueError(
            f"{PATIENTS_TABLE}: some IMD decile has more than one IMD quintile; the need "
            "tables cannot be protected jointly"
        )


def _rows(df: pl.DataFrame, table: str, area: str | None = None) -> pl.DataFrame:
    out = df.select(
        pl.lit(table).alias("table"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
        "pcn_code",
    )
    return out.with_columns(df[area].alias("area")) if area else out


def _equations(members: pl.DataFrame, group: Sequence[str], start: int) -> pl.DataFrame:
    """Links of the equations ``parent = sum(children)``, one per distinct ``group``."""
    ids = (
        members.select(group)
        .unique()
        .sort(group, nulls_last=True)
        .with_row_index("equation", offset=start)
        .with_columns(pl.col("equation").cast(pl.Int64))
    )
    return members.join(ids, on=list(group), nulls_equal=True).select(
        "equation", "table", "row", "parent"
    )


def need_links(
    raw: dict[str, pl.DataFrame], mapping: pl.DataFrame, totals: pl.DataFrame
) -> pl.DataFrame:
    """Every equation linking the cells of the four need tables (``raw``: level -> raw table)
    and the PCN totals (``totals``, table :data:`PCN_TOTALS`), as links for
    :func:`phm.disclosure.protect_linked_tables`:

    * per level and area: ``ALL`` = sum of the PCN rows;
    * per level and PCN (and ``ALL``): the PCN total = sum of its areas (the same total for
      the four levels), and the ``ALL`` total = sum of the PCN totals;
    * per PCN (and ``ALL``): an MSOA = sum of its LSOAs, an IMD decile = sum of its LSOAs,
      an IMD quintile = sum of its two deciles (a null area stays null at every level)."""
    rows = {lvl: _rows(df, lvl, LEVELS[lvl][0]) for lvl, df in raw.items()}
    parts: list[pl.DataFrame] = []

    def add(members: pl.DataFrame, group: Sequence[str]) -> None:
        start = sum(int(p["equation"].n_unique()) for p in parts)
        parts.append(_equations(members, group, start))

    for lvl, r in rows.items():
        add(
            r.with_columns(
                pl.lit(lvl).alias("lvl"), (pl.col("pcn_code") == ALL_PCNS).alias("parent")
            ),
            ["lvl", "area"],
        )
    tot = _rows(totals, PCN_TOTALS)
    for lvl, r in rows.items():
        members = pl.concat(
            [
                tot.with_columns(pl.lit(True).alias("parent")),
                r.drop("area").with_columns(pl.lit(False).alias("parent")),
            ]
        ).with_columns(pl.lit(lvl).alias("lvl"))
        add(members, ["lvl", "pcn_code"])
    add(
        tot.with_columns((pl.col("pcn_code") == ALL_PCNS).alias("parent"), pl.lit(0).alias("g")),
        ["g"],
    )
    fine = {
        "msoa": ("lsoa", "lsoa"),
        "imd_decile": ("lsoa", "lsoa"),
        "imd_quintile": ("imd_decile", "imd_decile"),
    }
    for lvl, (child_lvl, key) in fine.items():
        m = mapping.select(key, lvl).unique()
        child = (
            rows[child_lvl]
            .join(m.rename({key: "area", lvl: "coarse"}), on="area", how="left", nulls_equal=True)
            .drop("area")
            .with_columns(pl.lit(False).alias("parent"))
        )
        parent = rows[lvl].rename({"area": "coarse"}).with_columns(pl.lit(True).alias("parent"))
        members = pl.concat([parent, child.select(parent.columns)]).with_columns(
            pl.lit(lvl).alias("lvl")
        )
        add(members, ["lvl", "pcn_code", "coarse"])
    return pl.concat(parts)


def protect_need_counts(
    raw: dict[str, pl.DataFrame],
    mapping: pl.DataFrame,
    policy: DisclosurePolicy | None = None,
    *,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
) -> dict[str, pl.DataFrame]:
    """The four raw need tables (level -> table) with their counts protected JOINTLY
    (:func:`phm.disclosure.protect_linked_tables` over :func:`need_links`): Int64, null where
    suppressed. Every count column the four tables share is protected together."""
    counts = [c for c in count_columns(raw["lsoa"], prevalences, rates) if c in raw["lsoa"].columns]
    for lvl, df in raw.items():
        if sorted(c for c in count_columns(df, prevalences, rates) if c in df.columns) != sorted(
            counts
        ):
            raise ValueError(f"the {lvl} need table has other count columns than the LSOA table")
    totals = (
        raw["lsoa"]
        .group_by("pcn_code")
        .agg(pl.col(c).fill_null(0).sum() for c in counts)
        .sort("pcn_code")
    )
    check_area_mapping(mapping)
    links = need_links(raw, mapping, totals)
    return protect_linked_tables(
        raw, counts, links, elsewhere={PCN_TOTALS: totals}, policy=policy, as_text=False
    )


def build_need_tables(
    con: duckdb.DuckDBPyConnection,
    policy: DisclosurePolicy | None = None,
    *,
    prevalences: Sequence[Prevalence] = PREVALENCES,
    rates: Sequence[EventRate] = EVENT_RATES,
) -> dict[str, int]:
    """Write the four raw tables and their ``_published`` versions to schema ``geo``.

    The counts of the four published tables are protected jointly
    (:func:`protect_need_counts`): they are four partitions of the same patients, so a
    count suppressed or rounded in one table must not be recoverable from the others.
    Returns row counts by table name."""
    con.execute("CREATE SCHEMA IF NOT EXISTS geo")
    patients = _materialise_patients(con, prevalences, rates)
    try:
        kw = dict(prevalences=prevalences, rates=rates, patients=patients)
        strata = {level: need_strata(con, level, **kw) for level in LEVELS}
        raw = {level: compute_need(con, level, strata=strata[level], **kw) for level in LEVELS}
    finally:
        con.execute(f"DROP TABLE IF EXISTS {patients}")
    protected = protect_need_counts(
        raw, area_mapping(con), policy, prevalences=prevalences, rates=rates
    )
    written: dict[str, int] = {}
    for level, (_, table) in LEVELS.items():
        pub = publish(
            raw[level],
            policy,
            strata=strata[level],
            prevalences=prevalences,
            rates=rates,
            protected=protected[level],
        )
        for name, frame in ((table, raw[level]), (published_table(level), pub)):
            write_table(con, name, frame)
            written[name] = frame.height
    return written


# ------------------------------------------------------------------------------ GeoPackage

GPKG_NAME = "need_by_lsoa.gpkg"
GPKG_LAYER = "need_by_lsoa"


def published_lsoa_geodataframe(
    published: pl.DataFrame, pcn_code: str, boundaries: gpd.GeoDataFrame | None = None
) -> gpd.GeoDataFrame:
    """One PCN's published LSOA rows joined to the boundaries (WGS84), sorted by LSOA.

    Every LSOA where the PCN has patients appears; an LSOA with no boundary in the
    vendored file (outside Leicester, Leicestershire and Rutland) keeps a null geometry."""
    rows = published.filter(
        (pl.col("pcn_code") == pcn_code) & pl.col("lsoa11_code").is_not_null()
    ).sort("lsoa11_code")
    b = boundaries if boundaries is not None else load_lsoa_boundaries()
    geom = b.set_index("lsoa11_code").geometry
    pdf = rows.to_pandas()
    gdf = gpd.GeoDataFrame(
        pdf, geometry=pdf["lsoa11_code"].map(geom).values, crs=b.crs
    ).reset_index(drop=True)
    return gdf


def write_need_geopackages(
    published_lsoa: pl.DataFrame,
    out_dir: Path | str,
    *,
    pcn_codes: Sequence[str] | None = None,
    boundaries: gpd.GeoDataFrame | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<pcn_code>/need_by_lsoa.gpkg`` (layer ``need_by_lsoa``, EPSG:4326)
    for each PCN from the **published** LSOA table. Returns the paths written.

    GeoPackage embeds a last-change timestamp; it is pinned (``OGR_CURRENT_DATE``) so the
    same inputs give the same bytes (see docs/geography.md)."""
    out_dir = Path(out_dir)
    b = boundaries if boundaries is not None else load_lsoa_boundaries()
    codes = pcn_codes or sorted(
        c for c in published_lsoa["pcn_code"].unique().to_list() if c not in (ALL_PCNS, None)
    )
    paths = []
    for code in codes:
        gdf = published_lsoa_geodataframe(published_lsoa, code, b)
        path = out_dir / code / GPKG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gpkg(gdf, path, GPKG_LAYER)
        paths.append(path)
    return paths


#: the fixed timestamp GDAL writes into gpkg_contents.last_change
GPKG_FIXED_DATE = "2000-01-01T00:00:00.000Z"


def write_gpkg(gdf: gpd.GeoDataFrame, path: Path, layer: str) -> None:
    """Write one layer, replacing the file, with GDAL's timestamps pinned."""
    import pyogrio

    if path.exists():
        path.unlink()
    prev = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_FIXED_DATE})
    try:
        gdf.to_file(path, layer=layer, driver="GPKG", engine="pyogrio")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": prev})
