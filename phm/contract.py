"""The extract data contract (v2) as data.

This module restates the data contract (``docs/data-contract.md``) in a form
that code can use: the twelve tables, their columns in delivery order, types, nullability
and the allowed values of enumerated columns. The generator writes it, ingest checks the
required columns against it, and the pandera schemas in ``schemas/`` encode the row rules.

Keep it in step with the contract document: never loosen a rule silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CONTRACT_VERSION = 2
#: contract versions this pipeline reads (a v1 delivery lacks the v2 optional columns)
ACCEPTED_CONTRACT_VERSIONS = (1, 2)

#: The contract's scalar types.
TYPES = ("str", "date", "datetime", "int", "float", "bool")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False
    #: allowed values for an enumerated column (None = free)
    allowed: tuple[str, ...] | None = None
    description: str = ""
    #: contract version that added the column; a column added after v1 is optional: a
    #: delivery may leave it out (it is then null in raw and staging, and the data-quality
    #: report names it as missing)
    since: int = 1

    @property
    def optional(self) -> bool:
        return self.since > 1

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: unknown contract type {self.type!r}")


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    #: column(s) whose values must be unique (None = no key)
    key: tuple[str, ...] | None = None
    extra_rules: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_column_names(self) -> list[str]:
        """Columns every delivery must have (all but the optional, later-version ones)."""
        return [c.name for c in self.columns if not c.optional]

    @property
    def optional_column_names(self) -> list[str]:
        return [c.name for c in self.columns if c.optional]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


SEX = ("M", "F", "I", "U")
ETHNIC_CATEGORIES = (*tuple("ABCDEFGHJKLMNPRS"), "Z", "99")
APPOINTMENT_STATUS = (
    "attended",
    "did_not_attend",
    "cancelled_by_patient",
    "cancelled_by_practice",
    "booked",
)
STAFF_ROLES = (
    "gp",
    "nurse",
    "pharmacist",
    "social_prescriber",
    "care_coordinator",
    "health_coach",
    "paramedic",
    "other",
)
APPOINTMENT_MODES = ("face_to_face", "telephone", "video", "home_visit")
#: NHS Data Dictionary ADMISSION METHOD (data/reference/nhs-data-dictionary/admission_method.csv)
ELECTIVE_ADMISSION_METHODS = ("11", "12", "13")
#: emergency: 21-25, 2A-2D, and 28 (retired 2013, still in older history); 26/27 do not exist
EMERGENCY_ADMISSION_METHODS = ("21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28")
MATERNITY_ADMISSION_METHODS = ("31", "32")
OTHER_ADMISSION_METHODS = ("81", "82", "83")
#: ``99`` not known: accepted, counted as neither elective nor emergency
UNKNOWN_ADMISSION_METHOD = "99"
ADMISSION_METHODS = (
    *ELECTIVE_ADMISSION_METHODS,
    *EMERGENCY_ADMISSION_METHODS,
    *MATERNITY_ADMISSION_METHODS,
    *OTHER_ADMISSION_METHODS,
    UNKNOWN_ADMISSION_METHOD,
)
#: NHS Data Dictionary DISCHARGE METHOD (data/reference/nhs-data-dictionary/discharge_method.csv)
DISCHARGE_METHODS = ("1", "2", "3", "4", "5", "8", "9")
DISCHARGE_METHODS_DIED = ("4", "5")
DISCHARGE_METHOD_NOT_DISCHARGED = "8"
#: NHS Data Dictionary DISCHARGE DESTINATION, by the groups the pipeline uses
#: (data/reference/nhs-data-dictionary/discharge_destination.csv; current and retired codes)
DISCHARGE_DESTINATION_GROUPS: dict[str, tuple[str, ...]] = {
    "home": ("19", "29"),
    "care_home": ("54", "55", "56", "65", "85"),
    "other_hospital": ("48", "49", "50", "51", "52", "53", "84", "87"),
    "hospice": ("88",),
    "court_penal": ("37", "38", "40", "42"),
    "died": ("79",),
    "not_discharged": ("98",),
    "unknown": ("99",),
    "other": ("30", "66", "89"),
}
DISCHARGE_DESTINATIONS = tuple(sorted(c for g in DISCHARGE_DESTINATION_GROUPS.values() for c in g))
DISCHARGE_DESTINATION_DIED = "79"
DISCHARGE_DESTINATION_NOT_DISCHARGED = "98"
DEPARTMENT_TYPES = ("01", "02", "03", "04")
OP_ATTENDANCE_STATUS = ("5", "6", "7", "2", "3", "4")
PPN_CATEGORIES = (
    "mental_health",
    "domestic_abuse",
    "adult_at_risk",
    "child_at_risk",
    "missing_person",
    "substance_misuse",
    "other",
)
PPN_RISK_LEVELS = ("standard", "medium", "high")
SP_SOURCES = ("gp", "pcn_mdt", "drop_in", "self", "police", "social_care", "other")
SP_REASONS = (
    "mental_health",
    "isolation",
    "finance_debt",
    "housing",
    "benefits",
    "substance_misuse",
    "bereavement",
    "carer_support",
    "physical_activity",
    "education_work_volunteering",
    "accessing_services",
    "other",
)
SP_STATUS = ("waiting", "active", "discharged", "declined", "unable_to_contact")
#: outcome measure -> (min, max) of its score
SP_MEASURE_RANGES: dict[str, tuple[float, float]] = {
    "ons4_life_satisfaction": (0, 10),
    "ons4_happiness": (0, 10),
    "ons4_anxiety": (0, 10),
    "ucla3_loneliness": (3, 9),
    "wemwbs_short": (7, 35),
}
SP_TIMEPOINTS = ("baseline", "followup_6m")
ASSET_CATEGORIES = (
    "food",
    "debt_advice",
    "housing",
    "mental_health",
    "social_activity",
    "physical_activity",
    "carers",
    "bereavement",
    "substance_misuse",
    "education_work",
    "faith",
    "other",
)

C = Column

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "practices",
            "Reference: which practice is in which PCN.",
            (
                C("practice_code", "str", description="ODS code, one letter + 5 digits; unique"),
                C("practice_name", "str"),
                C("pcn_code", "str", description="ODS PCN code, U + 5 digits"),
                C("pcn_name", "str"),
                C("icb_code", "str", nullable=True, description="e.g. QK1"),
            ),
            key=("practice_code",),
        ),
        Table(
            "gp_patients",
            "One row per registration, current and recently ended.",
            (
                C("nhs_number", "str", description="10 digits, Modulus 11 check digit"),
                C("date_of_birth", "date", description="not in the future, not before 1900-01-01"),
                C("sex", "str", allowed=SEX),
                C("ethnic_category", "str", nullable=True, allowed=ETHNIC_CATEGORIES),
                C("lsoa11_code", "str", nullable=True, description="E01 + 6 digits"),
                C(
                    "lsoa21_code",
                    "str",
                    nullable=True,
                    description="v2, optional: LSOA 2021 code, E01 + 6 digits",
                    since=2,
                ),
                C("practice_code", "str", description="must exist in practices"),
                C("registration_start", "date"),
                C("registration_end", "date", nullable=True, description="null = current"),
                C("date_of_death", "date", nullable=True),
            ),
            extra_rules=("nhs_number unique among current registrations",),
        ),
        Table(
            "gp_events",
            "Coded clinical record: diagnoses, symptoms, findings, procedures, invitations.",
            (
                C("nhs_number", "str"),
                C("event_date", "date", description="not after extract_date"),
                C("snomed_code", "str", description="SNOMED CT concept id, 6-18 digits"),
                C("numeric_value", "float", nullable=True),
                C("practice_code", "str"),
            ),
        ),
        Table(
            "gp_medications",
            "Issues of prescribed items.",
            (
                C("nhs_number", "str"),
                C("issue_date", "date"),
                C("dmd_code", "str", description="dm+d concept id, digits"),
                C(
                    "bnf_code",
                    "str",
                    nullable=True,
                    description="BNF presentation code, <= 15 chars",
                ),
                C("quantity", "float", nullable=True),
            ),
        ),
        Table(
            "gp_appointments",
            "GP practice appointments.",
            (
                C("nhs_number", "str"),
                C("appointment_date", "date", description="after extract_date only if booked"),
                C("status", "str", allowed=APPOINTMENT_STATUS),
                C("staff_role", "str", allowed=STAFF_ROLES),
                C("mode", "str", nullable=True, allowed=APPOINTMENT_MODES),
                C("practice_code", "str"),
            ),
        ),
        Table(
            "sus_apc",
            "Hospital admitted patient care, one row per spell.",
            (
                C("nhs_number", "str"),
                C("spell_id", "str"),
                C("provider_code", "str", description="ODS trust code"),
                C("admission_date", "date"),
                C("discharge_date", "date", nullable=True, description=">= admission_date"),
                C("admission_method", "str", allowed=ADMISSION_METHODS),
                C(
                    "discharge_method",
                    "str",
                    nullable=True,
                    allowed=DISCHARGE_METHODS,
                    description="v2, optional: NHS Data Dictionary DISCHARGE METHOD",
                    since=2,
                ),
                C(
                    "discharge_destination",
                    "str",
                    nullable=True,
                    allowed=DISCHARGE_DESTINATIONS,
                    description="v2, optional: NHS Data Dictionary DISCHARGE DESTINATION",
                    since=2,
                ),
                C("primary_diagnosis", "str", description="ICD-10, as SUS sends it"),
                C("secondary_diagnoses", "str", nullable=True, description="ICD-10 codes; ';'"),
            ),
            key=("spell_id",),
        ),
        Table(
            "sus_ecds",
            "Emergency department attendances.",
            (
                C("nhs_number", "str"),
                C("attendance_id", "str"),
                C("provider_code", "str"),
                C("arrival_datetime", "datetime"),
                C("department_type", "str", allowed=DEPARTMENT_TYPES),
                C("chief_complaint_snomed", "str", nullable=True),
                C("admitted", "bool"),
            ),
            key=("attendance_id",),
        ),
        Table(
            "sus_op",
            "Hospital outpatient appointments.",
            (
                C("nhs_number", "str"),
                C("appointment_id", "str"),
                C("appointment_date", "date"),
                C("attendance_status", "str", allowed=OP_ATTENDANCE_STATUS),
                C("treatment_function_code", "str", description="3 digits"),
            ),
            key=("appointment_id",),
        ),
        Table(
            "ppn",
            "Police Public Protection Notifications shared with the practice.",
            (
                C("nhs_number", "str"),
                C("ppn_id", "str"),
                C("incident_date", "date"),
                C("shared_date", "date", description=">= incident_date"),
                C("category", "str", allowed=PPN_CATEGORIES),
                C("risk_level", "str", allowed=PPN_RISK_LEVELS),
            ),
            key=("ppn_id",),
        ),
        Table(
            "sp_referrals",
            "Social prescribing / care-connector caseload.",
            (
                C("nhs_number", "str"),
                C("referral_id", "str"),
                C("referral_date", "date"),
                C("source", "str", allowed=SP_SOURCES),
                C("reasons", "str", description="one or more SP_REASONS separated by ';'"),
                C("contact_attempts", "int", description=">= 0"),
                C("first_contact_date", "date", nullable=True),
                C("status", "str", allowed=SP_STATUS),
                C("discharge_date", "date", nullable=True, description="required if discharged"),
            ),
            key=("referral_id",),
        ),
        Table(
            "sp_outcomes",
            "Patient-reported outcome scores around a referral.",
            (
                C("referral_id", "str", description="must exist in sp_referrals"),
                C("measure", "str", allowed=tuple(SP_MEASURE_RANGES)),
                C("timepoint", "str", allowed=SP_TIMEPOINTS),
                C("score", "float", description="within the measure's range"),
                C("recorded_date", "date"),
            ),
        ),
        Table(
            "community_assets",
            "Voluntary, community and statutory services people can be connected to.",
            (
                C("asset_id", "str"),
                C("name", "str"),
                C("category", "str", allowed=ASSET_CATEGORIES),
                C("latitude", "float", description="WGS84, within England"),
                C("longitude", "float", description="WGS84"),
                C("lsoa11_code", "str", nullable=True),
            ),
            key=("asset_id",),
        ),
    )
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

#: table -> its columns added after v1 (optional in a delivery), e.g. for the data-quality report
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    t.name: tuple(t.optional_column_names) for t in TABLES.values() if t.optional_column_names
}

#: file name suffixes a delivery may use for a table, in order of preference
FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
MANIFEST_NAME = "_manifest.json"
