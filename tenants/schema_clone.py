"""Copy one schema (structure and rows) into a new one, in time proportional to that schema only.

django-tenants' CloneSchema reads catalog views such as pg_indexes and information_schema that
cover every schema of the database, so each new tenant cost more than the one before (182 ms for
the first ten, 2.1 s by the hundredth). Here the source schema's relations are listed once with
`pg_class.relnamespace = <oid>` and everything else is looked up by those relations' oids
(conrelid, indrelid, attrelid: indexed catalog columns), so the cost follows the template's size.

Names are reproduced exactly (constraints, indexes, sequences) because later migrations refer to
them. Definitions are read with search_path set to the source schema alone, so references to its
own objects come out unqualified, and replayed with search_path set to the target, so the same
text resolves to the copies. Anything this module does not know how to copy (views, functions,
triggers, types, ...) is refused with SchemaCloneError rather than silently left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from saas_platform.lib.db import connection

from tenants.models import validate_schema_name

# The source is the template (a reserved name, so validate_schema_name refuses it): accept any
# plain lowercase identifier, which is all Django and this project ever create.
_SOURCE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class SchemaCloneError(Exception):
    """The source schema is missing or holds objects this module cannot copy faithfully."""


def _qi(name: str) -> str:
    """A quoted SQL identifier (always quoted: correct for any name, reserved words included)."""
    return '"' + name.replace('"', '""') + '"'


# Object kinds found in the source that the clone does not reproduce. One query; each branch is
# filtered by the namespace oid (%(nsp)s) or by the source's relation oids (%(rels)s).
_UNSUPPORTED_SQL = """
SELECT 'relation of kind ' || c.relkind::text || ' ' || c.relname FROM pg_class c
 WHERE c.oid = ANY(%(rels)s) AND c.relkind NOT IN ('r', 'i', 'S')
UNION ALL
SELECT 'table property (partition, row security, replica identity or ACL) on ' || c.relname
  FROM pg_class c
 WHERE c.oid = ANY(%(rels)s) AND c.relkind = 'r'
   AND (c.relispartition OR c.relrowsecurity OR c.relreplident <> 'd' OR c.relacl IS NOT NULL)
UNION ALL
SELECT 'column privileges on ' || a.attrelid::regclass::text FROM pg_attribute a
 WHERE a.attrelid = ANY(%(rels)s) AND a.attacl IS NOT NULL
UNION ALL
SELECT 'inheritance of ' || i.inhrelid::regclass::text FROM pg_inherits i
 WHERE i.inhrelid = ANY(%(rels)s) OR i.inhparent = ANY(%(rels)s)
UNION ALL
SELECT 'trigger ' || t.tgname FROM pg_trigger t
 WHERE t.tgrelid = ANY(%(rels)s) AND NOT t.tgisinternal
UNION ALL
SELECT 'rule ' || r.rulename FROM pg_rewrite r WHERE r.ev_class = ANY(%(rels)s)
UNION ALL
SELECT 'policy ' || p.polname FROM pg_policy p WHERE p.polrelid = ANY(%(rels)s)
UNION ALL
SELECT 'clustered index ' || x.indexrelid::regclass::text FROM pg_index x
 WHERE x.indrelid = ANY(%(rels)s) AND x.indisclustered
UNION ALL
SELECT 'constraint trigger or other constraint ' || k.conname FROM pg_constraint k
 WHERE k.conrelid = ANY(%(rels)s) AND k.contype NOT IN ('p', 'u', 'c', 'x', 'f', 'n')
UNION ALL
SELECT 'function ' || p.proname FROM pg_proc p WHERE p.pronamespace = %(nsp)s
UNION ALL
-- A table's row type and the array of it come with CREATE TABLE; any other type does not.
SELECT 'type ' || t.typname FROM pg_type t
 WHERE t.typnamespace = %(nsp)s AND t.typrelid = 0
   AND NOT EXISTS (SELECT 1 FROM pg_type e
                    WHERE e.oid = t.typelem AND e.typarray = t.oid AND e.typrelid <> 0)
UNION ALL
SELECT 'extended statistics ' || s.stxname FROM pg_statistic_ext s
 WHERE s.stxnamespace = %(nsp)s
UNION ALL
SELECT 'collation ' || c.collname FROM pg_collation c WHERE c.collnamespace = %(nsp)s
UNION ALL
SELECT 'operator ' || o.oprname FROM pg_operator o WHERE o.oprnamespace = %(nsp)s
UNION ALL
SELECT 'operator class ' || o.opcname FROM pg_opclass o WHERE o.opcnamespace = %(nsp)s
UNION ALL
SELECT 'operator family ' || o.opfname FROM pg_opfamily o WHERE o.opfnamespace = %(nsp)s
UNION ALL
SELECT 'conversion ' || c.conname FROM pg_conversion c WHERE c.connamespace = %(nsp)s
UNION ALL
SELECT 'text search configuration ' || c.cfgname FROM pg_ts_config c
 WHERE c.cfgnamespace = %(nsp)s
UNION ALL
SELECT 'text search dictionary ' || d.dictname FROM pg_ts_dict d WHERE d.dictnamespace = %(nsp)s
UNION ALL
SELECT 'text search parser ' || p.prsname FROM pg_ts_parser p WHERE p.prsnamespace = %(nsp)s
UNION ALL
SELECT 'text search template ' || t.tmplname FROM pg_ts_template t
 WHERE t.tmplnamespace = %(nsp)s
"""

# Sequences, with the column owning them (identity: deptype 'i'; serial/OWNED BY: 'a').
_SEQUENCES_SQL = """
SELECT c.relname, c.relpersistence = 'u', format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcache, s.seqcycle, pg_sequence_last_value(c.oid),
       d.deptype, t.relname, a.attname, obj_description(c.oid, 'pg_class')
  FROM pg_class c
  JOIN pg_sequence s ON s.seqrelid = c.oid
  LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
       AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
  LEFT JOIN pg_class t ON t.oid = d.refobjid
  LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE c.oid = ANY(%(rels)s) AND c.relkind = 'S'
 ORDER BY c.relname
"""

# Columns: the ones rows are copied through (not generated) and defaults that call a sequence of
# the source (serial); LIKE would copy those pointing at the *source's* sequence.
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attgenerated <> '', a.attidentity,
       CASE WHEN EXISTS (
           SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.refobjid
            WHERE d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
              AND d.refclassid = 'pg_class'::regclass AND s.relkind = 'S'
              AND s.oid = ANY(%(rels)s))
       THEN pg_get_expr(ad.adbin, ad.adrelid) END
  FROM pg_attribute a
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attrelid = ANY(%(tables)s) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum
"""

# Table constraints (NOT NULL comes with LIKE; PostgreSQL 18 lists it as contype 'n'). FKs last:
# they need the referenced keys, and adding them after the rows avoids any ordering problem.
_CONSTRAINTS_SQL = """
SELECT k.conname, k.contype, t.relname, pg_get_constraintdef(k.oid),
       obj_description(k.oid, 'pg_constraint')
  FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
 WHERE k.conrelid = ANY(%(tables)s) AND k.contype IN ('p', 'u', 'x', 'c', 'f')
 ORDER BY k.contype = 'f', t.relname, k.conname
"""

# Indexes that back no constraint of their table (those come with ADD CONSTRAINT). conindid of
# an FK names the referenced table's index, hence the conrelid and contype conditions.
_INDEXES_SQL = """
SELECT quote_ident(i.relname), quote_ident(t.relname), x.indisunique, pg_get_indexdef(i.oid),
       i.relname, obj_description(i.oid, 'pg_class')
  FROM pg_index x
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid
 WHERE x.indrelid = ANY(%(tables)s)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                    WHERE k.conrelid = x.indrelid AND k.conindid = x.indexrelid
                      AND k.contype IN ('p', 'u', 'x'))
 ORDER BY i.relname
"""


@dataclass(frozen=True)
class _Table:
    oid: int
    name: str
    unlogged: bool
    options: list[str] | None
    comment: str | None


@dataclass(frozen=True)
class _Sequence:
    name: str
    unlogged: bool
    type_name: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cache: int
    cycle: bool
    last_value: int | None  # None: never called (nextval gives `start`)
    owner_kind: str | None  # 'i' identity, 'a' OWNED BY (serial), None standalone
    owner_table: str | None
    owner_column: str | None
    comment: str | None

    @property
    def options(self) -> str:
        return (
            f"AS {self.type_name} INCREMENT BY {self.increment} MINVALUE {self.minimum}"
            f" MAXVALUE {self.maximum} START WITH {self.start} CACHE {self.cache}"
            f" {'' if self.cycle else 'NO '}CYCLE"
        )

    @property
    def next_value(self) -> int:
        return self.start if self.last_value is None else self.last_value + self.increment


def schema_clone(*, source: str, target: str) -> None:
    """Create schema `target` as a copy of `source`: tables, constraints, indexes, rows.

    Runs in the caller's transaction (a savepoint of it; its own transaction when there is
    none), so a failure leaves no `target` behind. Raises ValidationError for an invalid or
    taken target name, SchemaCloneError for a missing source or objects it cannot copy.
    """
    validate_schema_name(target)
    if not _SOURCE_RE.match(source):
        raise SchemaCloneError(f"Invalid source schema name {source!r}.")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            _clone(cursor, source, target)
    finally:
        # SET LOCAL search_path lasts until the transaction ends: make django-tenants issue its
        # own SET on the next cursor instead of trusting the path it last set.
        connection.set_schema_to_public()


def _fetch(cursor: Any, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def _clone(cursor: Any, source: str, target: str) -> None:
    cursor.execute(
        "SELECT nspname, oid, quote_ident(nspname) FROM pg_namespace WHERE nspname IN (%s, %s)",
        [source, target],
    )
    found = {row[0]: row[1:] for row in cursor.fetchall()}
    if source not in found:
        raise SchemaCloneError(f"Source schema {source!r} does not exist.")
    if target in found:
        raise ValidationError(f"A schema named {target!r} already exists.")
    nsp, source_ident = found[source]

    # The one query that scans pg_class (no index on relnamespace); every later lookup goes by
    # these oids. Indexes and TOAST tables are not listed: they follow their tables.
    cursor.execute(
        "SELECT oid, relname, relkind, relpersistence = 'u', reloptions,"
        " obj_description(oid, 'pg_class')"
        " FROM pg_class WHERE relnamespace = %s AND relkind NOT IN ('i', 't')"
        " ORDER BY relname",
        [nsp],
    )
    relations = cursor.fetchall()
    rels = [row[0] for row in relations]
    tables = [_Table(r[0], r[1], r[3], r[4], r[5]) for r in relations if r[2] == "r"]
    table_oids = [t.oid for t in tables]
    params = {"nsp": nsp, "rels": rels, "tables": table_oids}

    unsupported = [row[0] for row in _fetch(cursor, _UNSUPPORTED_SQL, params)]
    if unsupported:
        raise SchemaCloneError(
            f"Schema {source!r} holds objects schema_clone cannot copy: "
            + "; ".join(sorted(unsupported))
        )

    # Definitions are deparsed relative to the search_path: with only the source on it, the
    # source's own objects come out unqualified (and everything else qualified).
    cursor.execute(f"SET LOCAL search_path = {_qi(source)}")
    sequences = [_Sequence(*row) for row in _fetch(cursor, _SEQUENCES_SQL, params)]
    columns = _fetch(cursor, _COLUMNS_SQL, params)
    constraints = _fetch(cursor, _CONSTRAINTS_SQL, params)
    indexes = _fetch(cursor, _INDEXES_SQL, params)

    # Replayed with only the target on the path: the unqualified names resolve to the copies.
    src, tgt = _qi(source), _qi(target)
    cursor.execute(f"CREATE SCHEMA {tgt}")
    cursor.execute(f"SET LOCAL search_path = {tgt}")
    statements: list[str] = []
    # Serial and standalone sequences before the tables whose defaults call them; identity
    # sequences are made by LIKE ... INCLUDING IDENTITY.
    for seq in sequences:
        if seq.owner_kind != "i":
            statements.append(
                f"CREATE {'UNLOGGED ' if seq.unlogged else ''}SEQUENCE {tgt}.{_qi(seq.name)}"
                f" {seq.options}"
            )
    for table in tables:
        options = f" WITH ({', '.join(table.options)})" if table.options else ""
        statements.append(
            f"CREATE {'UNLOGGED ' if table.unlogged else ''}TABLE {tgt}.{_qi(table.name)}"
            f" (LIKE {src}.{_qi(table.name)} INCLUDING DEFAULTS INCLUDING IDENTITY"
            f" INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS"
            f" INCLUDING COMPRESSION){options}"
        )
        if table.comment is not None:
            statements.append(
                f"COMMENT ON TABLE {tgt}.{_qi(table.name)} IS {_literal(table.comment)}"
            )
    names = {t.oid: t.name for t in tables}
    copy_columns: dict[int, list[str]] = {}
    for table_oid, column, generated, _identity, serial_default in columns:
        if not generated:
            copy_columns.setdefault(table_oid, []).append(_qi(column))
        if serial_default is not None:
            statements.append(
                f"ALTER TABLE {tgt}.{_qi(names[table_oid])} ALTER COLUMN {_qi(column)}"
                f" SET DEFAULT {serial_default}"
            )
    for seq in sequences:
        if seq.owner_kind == "a":
            statements.append(
                f"ALTER SEQUENCE {tgt}.{_qi(seq.name)} OWNED BY"
                f" {tgt}.{_qi(seq.owner_table or '')}.{_qi(seq.owner_column or '')}"
            )
        if seq.owner_kind != "i" and seq.comment is not None:
            statements.append(
                f"COMMENT ON SEQUENCE {tgt}.{_qi(seq.name)} IS {_literal(seq.comment)}"
            )
    # Rows before keys and indexes (one build instead of per-row upkeep); OVERRIDING SYSTEM
    # VALUE keeps the ids of GENERATED ALWAYS identity columns.
    for table in tables:
        cols = ", ".join(copy_columns.get(table.oid, []))
        if cols:
            statements.append(
                # Identifiers only, each quoted, from the catalog.
                f"INSERT INTO {tgt}.{_qi(table.name)} ({cols}) OVERRIDING SYSTEM VALUE"  # noqa: S608
                f" SELECT {cols} FROM {src}.{_qi(table.name)}"
            )
    for name, _kind, table_name, definition, comment in constraints:
        statements.append(
            f"ALTER TABLE {tgt}.{_qi(table_name)} ADD CONSTRAINT {_qi(name)} {definition}"
        )
        if comment is not None:
            statements.append(
                f"COMMENT ON CONSTRAINT {_qi(name)} ON {tgt}.{_qi(table_name)}"
                f" IS {_literal(comment)}"
            )
    for quoted_index, quoted_table, unique, definition, index_name, comment in indexes:
        statements.append(
            _index_statement(source_ident, target, quoted_index, quoted_table, unique, definition)
        )
        if comment is not None:
            statements.append(f"COMMENT ON INDEX {tgt}.{_qi(index_name)} IS {_literal(comment)}")
    for statement in statements:
        cursor.execute(statement)
    _sequences_restart(cursor, target, sequences)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _index_statement(
    source_ident: str, target: str, index: str, table: str, unique: bool, definition: str
) -> str:
    """pg_get_indexdef's text with the table re-pointed at the target (it qualifies the table)."""
    head = f"CREATE {'UNIQUE ' if unique else ''}INDEX {index} ON "
    for on in (f"{source_ident}.{table}", table):
        prefix = f"{head}{on} USING "
        if definition.startswith(prefix):
            return f"{head}{_qi(target)}.{table} USING {definition[len(prefix) :]}"
    raise SchemaCloneError(f"Unexpected index definition: {definition}")


def _sequences_restart(cursor: Any, target: str, sequences: Sequence[_Sequence]) -> None:
    """Give identity sequences their source names; continue every sequence past copied ids."""
    tgt = _qi(target)
    identity = {(s.owner_table, s.owner_column): s.name for s in sequences if s.owner_kind == "i"}
    if identity:
        # LIKE names the identity sequences it creates itself (the same way migrate did, unless
        # a name was taken): look them up through their columns, by the target tables' oids.
        cursor.execute(
            "SELECT t.relname, a.attname, s.relname FROM pg_depend d"
            " JOIN pg_class s ON s.oid = d.objid JOIN pg_class t ON t.oid = d.refobjid"
            " JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
            " WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY(%s::regclass[])"
            " AND d.classid = 'pg_class'::regclass AND d.deptype = 'i'",
            [sorted({f"{tgt}.{_qi(table or '')}" for table, _ in identity})],
        )
        by_name = {s.name: s for s in sequences}
        for table, column, made in cursor.fetchall():
            wanted = identity[(table, column)]
            if made != wanted:
                cursor.execute(f"ALTER SEQUENCE {tgt}.{_qi(made)} RENAME TO {_qi(wanted)}")
            # LIKE copies the options but makes every identity sequence bigint (PostgreSQL
            # 15/16): restate them all, the type included.
            cursor.execute(f"ALTER SEQUENCE {tgt}.{_qi(wanted)} {by_name[wanted].options}")
    for seq in sequences:
        name = _literal(f"{tgt}.{_qi(seq.name)}")
        upto = str(seq.next_value)
        if seq.owner_table and seq.owner_column and seq.increment > 0:
            # GREATEST skips the NULL max() of an empty table.
            upto = (
                f"GREATEST({upto}, (SELECT max({_qi(seq.owner_column)}) + 1"  # noqa: S608
                f" FROM {tgt}.{_qi(seq.owner_table)}))"
            )
        cursor.execute(f"SELECT setval({name}, {upto}, false)")
