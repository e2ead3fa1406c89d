"""Clinical measures: long-term condition registers, eFI, HFRS, utilisation, patient measures.

Pure functions over a DuckDB connection (no Dagster). Inputs are the ``staging`` tables of the
data contract; clinical definitions are data in ``data/definitions/``; outputs are ``marts``
tables keyed by the pseudonymous ``person_id``. Start with :func:`build_patient_measures`; ``docs/measures.md`` documents every rule
and its published source.
"""

from phm.measures.definitions import (
    DefinitionError,
    describe,
    load_efi_definition,
    load_hfrs_weights,
    load_ltc_conditions,
    measure_tables,
    required_codelists,
    write_definition_tables,
)
from phm.measures.efi import build_efi
from phm.measures.hfrs import build_hfrs
from phm.measures.ltc import build_ltc_registers
from phm.measures.patient import (
    MEASURES_TABLES,
    MeasuresReport,
    build_measures,
    build_patient_measures,
    build_patient_table,
    check_reference_tables,
    load_reference_tables,
    patient_measures_columns,
)
from phm.measures.utilisation import build_utilisation

__all__ = [
    "MEASURES_TABLES",
    "DefinitionError",
    "MeasuresReport",
    "build_efi",
    "build_hfrs",
    "build_ltc_registers",
    "build_measures",
    "build_patient_measures",
    "build_patient_table",
    "build_utilisation",
    "check_reference_tables",
    "describe",
    "load_efi_definition",
    "load_hfrs_weights",
    "load_ltc_conditions",
    "load_reference_tables",
    "measure_tables",
    "patient_measures_columns",
    "required_codelists",
    "write_definition_tables",
]
