"""sus_apc: hospital admitted patient care (SUS APC), one row per spell.

ICD-10 codes arrive in every form SUS uses (``I500``, ``I50.0``, ``I50X``, ``F00.0*``,
``E119-``); staging holds them in the contract's form (``I500``, ``I50``, ``F000``, ``E119``),
and ``secondary_diagnoses`` stays a ``;``-separated string of such codes (empty items dropped).
"""

from __future__ import annotations

import polars as pl

from phm.contract import (
    DISCHARGE_DESTINATION_DIED,
    DISCHARGE_DESTINATION_NOT_DISCHARGED,
    DISCHARGE_METHOD_NOT_DISCHARGED,
    DISCHARGE_METHODS_DIED,
    TABLES,
)
from schemas._base import (
    ICD10_CODE,
    RuleContext,
    ValidationRule,
    date_order,
    nhs_number_rules,
    normalise_icd10,
    not_after_extract,
    ok_when,
    provider_code_rule,
    table_schema,
    transform,
    unique_first_wins,
)

TABLE = TABLES["sus_apc"]
MAX_SECONDARY = 23
ICD10_DETAIL = (
    "letter + 2 digits, optional `.`, optional 4th character (digit or filler `X`), optional "
    "5th digit, optional mark `* † + ! -`; case-insensitive; staged as e.g. `I500`, `I50`"
)


@transform("sus_apc", "primary_diagnosis")
def _primary(text: pl.Expr) -> pl.Expr:
    return normalise_icd10(text)


#: a ``;``-separated list of ICD-10 codes in delivered forms; empty items allowed
SECONDARY_PATTERN = rf"^(?:[ \t]*(?:{ICD10_CODE})?[ \t]*;)*[ \t]*(?:{ICD10_CODE})?[ \t]*$"


def _secondary_valid(text: pl.Expr) -> pl.Expr:
    return text.str.to_uppercase().str.contains(SECONDARY_PATTERN)


@transform("sus_apc", "secondary_diagnoses")
def _secondary(text: pl.Expr) -> pl.Expr:
    """Each code normalised as :func:`normalise_icd10` does, whole-string (no list ops):
    drop marks and dots, a 5th character, a filler X; tidy separators; drop empty items."""
    norm = (
        text.str.to_uppercase()
        .str.replace_all(r"[-*+!†.]", "")
        .str.replace_all(r"([A-Z][0-9]{2}[0-9X])[0-9]", "${1}")
        .str.replace_all(r"([0-9])X", "${1}")
        .str.replace_all(r"[ \t]*;[ \t]*", ";")
        .str.replace_all(r";{2,}", ";")
        .str.strip_chars(";")
    )
    return pl.when(_secondary_valid(text) & (norm != "")).then(norm)


# --- v2 discharge consistency (quarantined with the rule's name) ----------------------


def died_only_with_destination_died(ctx: RuleContext) -> list[ValidationRule]:
    """discharge_method 4/5 (died, stillbirth) only with discharge_destination 79, when both
    are supplied."""
    method, dest = ctx.raw("discharge_method"), ctx.raw("discharge_destination")
    return [
        ValidationRule(
            "discharge_method: 4 or 5 (died) only with discharge_destination 79",
            "discharge_method",
            "not_allowed_value",
            ok_when(
                [ctx.present("discharge_method"), ctx.present("discharge_destination")],
                ~method.is_in(list(DISCHARGE_METHODS_DIED)) | (dest == DISCHARGE_DESTINATION_DIED),
            ),
            detail="checked when both are supplied",
        )
    ]


def not_discharged_only_without_date(ctx: RuleContext) -> list[ValidationRule]:
    """discharge_method 8 / discharge_destination 98 (not discharged) only when
    discharge_date is empty; equally, a spell with a discharge_date is not 8/98."""
    has_date = ctx.present("discharge_date")
    return [
        ValidationRule(
            "discharge_method: 8 (still in hospital) only without a discharge_date",
            "discharge_method",
            "not_allowed_value",
            ok_when(
                [ctx.present("discharge_method")],
                ~(ctx.raw("discharge_method") == DISCHARGE_METHOD_NOT_DISCHARGED) | ~has_date,
            ),
            detail="a spell with a discharge_date is not `8`",
        ),
        ValidationRule(
            "discharge_destination: 98 (not discharged) only without a discharge_date",
            "discharge_destination",
            "not_allowed_value",
            ok_when(
                [ctx.present("discharge_destination")],
                ~(ctx.raw("discharge_destination") == DISCHARGE_DESTINATION_NOT_DISCHARGED)
                | ~has_date,
            ),
            detail="a spell with a discharge_date is not `98`",
        ),
    ]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    secondary = ctx.raw("secondary_diagnoses")
    well_formed = _secondary_valid(secondary)
    n_codes = secondary.str.count_matches(r"[^; \t]+")
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "spell_id"),
        *provider_code_rule(ctx),
        *not_after_extract(ctx, "admission_date"),
        *not_after_extract(ctx, "discharge_date"),
        *date_order(ctx, "discharge_date", "admission_date"),
        *died_only_with_destination_died(ctx),
        *not_discharged_only_without_date(ctx),
        ValidationRule(
            "primary_diagnosis: ICD-10 code",
            "primary_diagnosis",
            "malformed_code",
            ok_when([ctx.present("primary_diagnosis")], ctx.val("primary_diagnosis").is_not_null()),
            detail=ICD10_DETAIL,
        ),
        ValidationRule(
            "secondary_diagnoses: ICD-10 codes separated by ';'",
            "secondary_diagnoses",
            "malformed_code",
            ok_when([ctx.present("secondary_diagnoses")], well_formed),
            detail="each item as primary_diagnosis; items trimmed, empty items ignored",
        ),
        ValidationRule(
            f"secondary_diagnoses: at most {MAX_SECONDARY} codes",
            "secondary_diagnoses",
            "out_of_range",
            ok_when([ctx.present("secondary_diagnoses"), well_formed], n_codes <= MAX_SECONDARY),
        ),
    ]


rules, schema = table_schema(TABLE, extra_rules)
