"""Pseudonymisation: ``person_id`` = HMAC-SHA256 of the NHS number under a secret key.

Analytic tables are keyed by ``person_id``; NHS numbers live only in the identity table
(``marts.person_identity``) and in the PCN exports, which are for direct care.

The key comes from configuration, never from the repository:

- ``PHM_PSEUDONYMISATION_KEY``: the key itself (a long random string), or
- ``PHM_PSEUDONYMISATION_KEY_FILE``: a file holding it.

Whatever its source, a key shorter than :data:`MIN_KEY_BYTES` (32) bytes is refused.

``PHM_MODE`` is ``development`` (the default) or ``production``; any other value is an error
(a typo must not silently mean development). In production a missing key is an error, and a
key file readable by its group or by others is refused. In development a random key is
generated on first use and kept in ``~/.config/phm/pseudonymisation.key`` (outside the
repository; ``PHM_DEV_KEY_FILE`` moves it), created with mode 0600 from the start (never
written first and restricted afterwards), so person ids are stable between runs.

The HMAC is computed inside DuckDB (RFC 2104 over its ``sha256``) so that a million
patients are pseudonymised as one set operation; :func:`person_id` is the same function in
Python, used by tests to prove the two agree.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

import duckdb

from phm.files import atomic_write_text

log = logging.getLogger("phm.pseudonymise")

_BLOCK = 64  # SHA-256 block size in bytes


#: the shortest key accepted (256 bits, the HMAC-SHA256 output size)
MIN_KEY_BYTES = 32

#: the values of ``PHM_MODE``
MODES = ("development", "production")


class KeyMissing(RuntimeError):
    """No usable pseudonymisation key (missing, too short or exposed)."""


class UnknownMode(ValueError):
    """``PHM_MODE`` is set to something other than :data:`MODES`."""


def run_mode() -> str:
    """``PHM_MODE`` (``development`` when unset or empty); raises :class:`UnknownMode` for
    anything else."""
    value = os.environ.get("PHM_MODE", "").strip().lower() or "development"
    if value not in MODES:
        raise UnknownMode(
            f"PHM_MODE={os.environ.get('PHM_MODE')!r} is not one of {', '.join(MODES)}"
        )
    return value


def _dev_key_file() -> Path:
    return Path(
        os.environ.get("PHM_DEV_KEY_FILE")
        or Path.home() / ".config" / "phm" / "pseudonymisation.key"
    )


def _checked(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        # the length only, never the key
        raise KeyMissing(
            f"{source}: the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes "
            f"(it has {len(key)}); use e.g. `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`"
        )
    return key


def load_key() -> bytes:
    """The pseudonymisation key from configuration (see the module docstring)."""
    mode = run_mode()
    value = os.environ.get("PHM_PSEUDONYMISATION_KEY")
    if value:
        return _checked(value.encode("utf-8"), "PHM_PSEUDONYMISATION_KEY")
    key_file = os.environ.get("PHM_PSEUDONYMISATION_KEY_FILE")
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise KeyMissing(f"PHM_PSEUDONYMISATION_KEY_FILE={path} does not exist")
        if mode == "production" and path.stat().st_mode & 0o077:
            raise KeyMissing(
                f"{path}: the key file is readable or writable by its group or others "
                f"(mode {path.stat().st_mode & 0o777:04o}); PHM_MODE=production needs "
                f"`chmod 600 {path}`"
            )
        key = path.read_text(encoding="utf-8").strip().encode("utf-8")
        return _checked(key, str(path))
    if mode == "production":
        raise KeyMissing(
            "PHM_MODE=production needs a pseudonymisation key: set PHM_PSEUDONYMISATION_KEY "
            "or PHM_PSEUDONYMISATION_KEY_FILE (a file outside the repository)"
        )
    path = _dev_key_file()
    if not path.is_file():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the temporary file is created 0600 (O_EXCL) and renamed: never readable by others
        atomic_write_text(path, secrets.token_hex(32), mode=0o600)
        log.warning("generated a local development pseudonymisation key at %s", path)
    return _checked(path.read_text(encoding="utf-8").strip().encode("utf-8"), str(path))


def _pads(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def person_id(nhs_number: str, key: bytes) -> str:
    """HMAC-SHA256 of one NHS number, hex (the reference implementation)."""
    return hmac.new(key, nhs_number.encode("utf-8"), hashlib.sha256).hexdigest()


def person_id_sql(column: str) -> str:
    """A DuckDB expression for ``person_id`` of ``column``; bind ``$ipad`` and ``$opad``
    from :func:`sql_params`."""
    return f"sha256($opad || unhex(sha256($ipad || encode({column}))))"


def sql_params(key: bytes) -> dict[str, bytes]:
    ipad, opad = _pads(key)
    return {"ipad": ipad, "opad": opad}


def build_identity(con: duckdb.DuckDBPyConnection, key: bytes, source: str) -> int:
    """Create ``marts.person_identity(person_id, nhs_number)`` for the distinct NHS numbers
    of ``source`` (a table or query). Returns the number of people."""
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute(
        f"""CREATE OR REPLACE TABLE marts.person_identity AS
            SELECT {person_id_sql("nhs_number")} AS person_id, nhs_number
            FROM (SELECT DISTINCT nhs_number FROM {source} WHERE nhs_number IS NOT NULL)
            ORDER BY person_id""",
        sql_params(key),
    )
    return con.execute("SELECT count(*) FROM marts.person_identity").fetchone()[0]


#: staging tables whose nhs_number column names a person
PERSON_TABLES = (
    "gp_patients",
    "gp_events",
    "gp_medications",
    "gp_appointments",
    "sus_apc",
    "sus_ecds",
    "sus_op",
    "ppn",
    "sp_referrals",
)


#: the one ``marts`` table allowed to hold NHS numbers
IDENTITY_TABLE = "person_identity"


def identifier_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``marts`` tables other than ``marts.person_identity`` that have an ``nhs_number``
    column, sorted (``schema.table``). Empty when the marts are keyed by ``person_id`` only."""
    return [
        f"marts.{r[0]}"
        for r in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND lower(column_name) = 'nhs_number' "
            "AND table_name <> ? ORDER BY 1",
            [IDENTITY_TABLE],
        ).fetchall()
    ]


def pseudonymise_marts(con: duckdb.DuckDBPyConnection, key: bytes) -> dict[str, int]:
    """Key every ``marts`` table by ``person_id`` instead of ``nhs_number``.

    Builds ``marts.person_identity`` over every NHS number in the staging tables, then
    replaces the ``nhs_number`` column of each marts table (first column: ``person_id``).
    Afterwards the identity table is the only marts table holding NHS numbers.
    """
    union = " UNION ".join(f"SELECT nhs_number FROM staging.{t}" for t in PERSON_TABLES)
    people = build_identity(con, key, f"({union})")
    tables = [t.removeprefix("marts.") for t in identifier_columns(con)]
    rows = {}
    for table in tables:
        con.execute(
            f"""CREATE OR REPLACE TABLE marts.{table} AS
                SELECT i.person_id, t.* EXCLUDE (nhs_number)
                FROM marts.{table} t JOIN marts.person_identity i USING (nhs_number)
                ORDER BY i.person_id"""
        )
        rows[table] = con.execute(f"SELECT count(*) FROM marts.{table}").fetchone()[0]
    log.info("pseudonymised %d marts tables over %d people", len(tables), people)
    return rows
