"""Hospital spells: the ONE definition of an emergency admission, a transfer and a discharge.

Every part of the pipeline that counts emergency admissions or discharges (utilisation, the
Hospital Frailty Risk Score inputs, the risk model's outcome, the impact measures, and every
cohort rule through the events of ``data/definitions/events.yaml``) reads the view
:data:`SPELLS_VIEW` (``staging.apc_spells``): the rows of ``staging.sus_apc`` with these
derived columns:

``emergency_method``
    ``admission_method`` (trimmed, upper-cased) is an NHS Data Dictionary emergency ADMISSION
    METHOD: :data:`phm.contract.EMERGENCY_ADMISSION_METHODS` (21-25, 2A-2D, and 28, retired in
    2013 but in older history).
``continues_stay``
    the spell is a ``2B`` emergency transfer in from another hospital provider that continues
    a stay: another spell of the same person ended on its admission date or the day before,
    alive, with a discharge destination in the contract's "another hospital" group, or with
    no destination supplied (v1 data).
``emergency_admission``
    ``emergency_method AND NOT continues_stay``: the spell that began an emergency episode of
    care. This is what every count of "emergency admissions" counts: a transfer continues the
    same stay, so the episode is counted once, by the spell that began it (as the synthetic
    generator's impact truth does). A ``2B`` spell with no earlier spell in the data (the
    sending hospital's spell is not in the extract) began the episode as far as the data
    shows, and counts.
``died_in_hospital``
    ``discharge_method`` 4 or 5 (died, stillbirth) or ``discharge_destination`` 79.
``hospital_death_date``
    for such a spell, its discharge date (its admission date when no discharge date is given).
``still_in_hospital``
    no discharge date (the contract's ``8`` / ``98``).
``transferred_out``
    discharged alive to another hospital: the destination is in the "another hospital" group,
    or no destination was supplied (v1) and a ``2B`` spell of the same person began on the
    discharge date or the next day. A transfer is not a discharge: the later discharge of
    the same episode is.
``discharged_alive``
    discharged (a discharge date), not died, not transferred out.
``discharged_to``
    words for where the person went (for reasons): "home", "a temporary residence", "a care
    home", ..., "destination not known" (99), "destination not supplied" (null, v1 data).

The view reads ``staging.sus_apc`` when queried, so it stays right when the table is
reloaded; :func:`create_spells_view` (re)creates it and is called by the measures builders.
"""

from __future__ import annotations

import duckdb

from phm.contract import (
    DISCHARGE_DESTINATION_DIED,
    DISCHARGE_DESTINATION_GROUPS,
    DISCHARGE_METHODS_DIED,
    EMERGENCY_ADMISSION_METHODS,
)

SPELLS_VIEW = "staging.apc_spells"
#: the admission method of an emergency transfer in from another hospital provider
TRANSFER_IN_METHOD = "2B"

#: discharge destination group (phm.contract) -> words in a cohort reason
DESTINATION_WORDS: dict[str, str] = {
    "home": "home",
    "care_home": "a care home",
    "other_hospital": "another hospital",
    "hospice": "a hospice",
    "court_penal": "court, prison or police custody",
    "died": "died",
    "not_discharged": "not yet discharged",
    "unknown": "(destination not known)",
    "other": "another destination",
}
#: destination codes with their own words (within the home group)
DESTINATION_CODE_WORDS: dict[str, str] = {
    "19": "home",
    "29": "a temporary residence",
}
NOT_SUPPLIED = "(destination not supplied)"


def _in(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


def emergency_method_sql(column: str = "admission_method") -> str:
    """SQL predicate: ``column`` is an emergency admission method (any of them, 2B included).

    Counting emergency admissions uses the view's ``emergency_admission`` instead, which
    leaves out transfers that continue a stay."""
    return f"coalesce(upper(trim({column})) IN ({_in(EMERGENCY_ADMISSION_METHODS)}), FALSE)"


def _discharged_to_sql(col: str) -> str:
    whens = [f"WHEN {col} = '{c}' THEN '{w}'" for c, w in DESTINATION_CODE_WORDS.items()]
    whens += [
        f"WHEN {col} IN ({_in(codes)}) THEN '{DESTINATION_WORDS[group]}'"
        for group, codes in DISCHARGE_DESTINATION_GROUPS.items()
    ]
    return (
        f"CASE WHEN {col} IS NULL THEN '{NOT_SUPPLIED}' {' '.join(whens)} "
        f"ELSE 'destination code ' || {col} END"
    )


#: staging.sus_apc columns the view passes on (a hand-made table may lack the optional ones)
REQUIRED_COLUMNS = ("nhs_number", "admission_date", "discharge_date", "admission_method")
OPTIONAL_COLUMNS = (
    "spell_id",
    "provider_code",
    "discharge_method",
    "discharge_destination",
    "primary_diagnosis",
    "secondary_diagnoses",
)


def spells_sql(present: set[str] | None = None) -> str:
    """The SELECT behind :data:`SPELLS_VIEW` (see the module docstring).

    ``present``: the columns ``staging.sus_apc`` has (default: all of the contract's); a
    missing optional column reads as null (a v1 delivery's staging has them all, null)."""
    present = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS) if present is None else present
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise LookupError(f"staging.sus_apc lacks column(s): {', '.join(missing)}")
    opt = [
        c if c in present else f"CAST(NULL AS VARCHAR) AS {c}"
        for c in OPTIONAL_COLUMNS
        if c != "spell_id"
    ]
    # a spell's own identity, for "another spell of the same person"
    spell_id = (
        "spell_id"
        if "spell_id" in present
        else "CAST(row_number() OVER (ORDER BY nhs_number, admission_date, discharge_date, "
        "admission_method) AS VARCHAR) AS spell_id"
    )
    other_hospital = _in(DISCHARGE_DESTINATION_GROUPS["other_hospital"])
    died = (
        f"coalesce(discharge_method IN ({_in(DISCHARGE_METHODS_DIED)}), FALSE) "
        f"OR coalesce(discharge_destination = '{DISCHARGE_DESTINATION_DIED}', FALSE)"
    )
    return f"""
        WITH s AS (
            SELECT nhs_number, {spell_id}, admission_date, discharge_date, admission_method,
                   {", ".join(opt)},
                   {emergency_method_sql()} AS emergency_method,
                   coalesce(upper(trim(admission_method)) = '{TRANSFER_IN_METHOD}', FALSE)
                       AS transfer_in_method,
                   ({died}) AS died_in_hospital
            FROM staging.sus_apc
        ),
        -- alive discharges that may send the person on to another hospital
        sent AS (
            SELECT nhs_number, spell_id, discharge_date
            FROM s
            WHERE discharge_date IS NOT NULL AND NOT died_in_hospital
              AND (discharge_destination IS NULL
                   OR discharge_destination IN ({other_hospital}))
        ),
        -- 2B spells continuing a stay: a sent spell ended on the admission date or the day before
        continuing AS (
            SELECT DISTINCT r.spell_id
            FROM s r JOIN sent p
              ON p.nhs_number = r.nhs_number AND p.spell_id <> r.spell_id
             AND p.discharge_date BETWEEN r.admission_date - 1 AND r.admission_date
            WHERE r.transfer_in_method
        ),
        -- v1 (no destination): a discharge followed by a 2B the same or the next day
        received AS (
            SELECT DISTINCT p.spell_id
            FROM sent p JOIN s r
              ON r.nhs_number = p.nhs_number AND r.spell_id <> p.spell_id
             AND r.admission_date BETWEEN p.discharge_date AND p.discharge_date + 1
            WHERE r.transfer_in_method
        )
        SELECT s.nhs_number, s.spell_id, s.provider_code, s.admission_date, s.discharge_date,
               s.admission_method, s.discharge_method, s.discharge_destination,
               s.primary_diagnosis, s.secondary_diagnoses,
               s.emergency_method,
               (c.spell_id IS NOT NULL) AS continues_stay,
               (s.emergency_method AND c.spell_id IS NULL) AS emergency_admission,
               s.died_in_hospital,
               CASE WHEN s.died_in_hospital
                    THEN coalesce(s.discharge_date, s.admission_date) END AS hospital_death_date,
               (s.discharge_date IS NULL) AS still_in_hospital,
               (s.discharge_date IS NOT NULL AND NOT s.died_in_hospital
                AND (coalesce(s.discharge_destination IN ({other_hospital}), FALSE)
                     OR (s.discharge_destination IS NULL AND r.spell_id IS NOT NULL)))
                   AS transferred_out,
               {_discharged_to_sql("s.discharge_destination")} AS discharged_to
        FROM s
        LEFT JOIN continuing c ON c.spell_id = s.spell_id
        LEFT JOIN received r ON r.spell_id = s.spell_id
    """


def spells_relation(con: duckdb.DuckDBPyConnection) -> str:
    """The spells as an inline SQL relation ``(SELECT ...)``, for read-only connections that
    cannot create :data:`SPELLS_VIEW` (same columns as the view)."""
    from phm.definitions import table_columns_of

    present = table_columns_of(con)("staging.sus_apc")
    return f"({_with_discharged_alive(spells_sql(present))})"


def _with_discharged_alive(sql: str) -> str:
    return f"""SELECT *, (discharge_date IS NOT NULL AND NOT died_in_hospital
                          AND NOT transferred_out) AS discharged_alive
        FROM ({sql})"""


def create_spells_view(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create :data:`SPELLS_VIEW` over ``staging.sus_apc`` (which must exist)."""
    from phm.definitions import table_columns_of

    present = table_columns_of(con)("staging.sus_apc")
    con.execute(
        f"CREATE OR REPLACE VIEW {SPELLS_VIEW} AS {_with_discharged_alive(spells_sql(present))}"
    )


def hospital_deaths_sql(extract_date_sql: str) -> str:
    """SQL: ``person_id`` of everyone whose hospital record shows a death on or before the
    extract date (``died_in_hospital``), whatever the GP record says yet: no call list may
    hold them. Reads :data:`SPELLS_VIEW` and ``marts.person_identity``."""
    return (
        f"SELECT DISTINCT i.person_id FROM {SPELLS_VIEW} s "
        "JOIN marts.person_identity i USING (nhs_number) "
        f"WHERE s.died_in_hospital AND s.hospital_death_date <= {extract_date_sql}"
    )
