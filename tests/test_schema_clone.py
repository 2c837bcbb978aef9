"""tenants.schema_clone: a faithful copy of a schema, by name, at a cost that ignores other schemas."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from jobs.models import Job
from tenants.models import Tenant
from tenants.provisioning import template_ensure
from tenants.schema_clone import SchemaCloneError, schema_clone
from tenants.services import tenant_create

TEMPLATE = settings.TENANT_BASE_SCHEMA


def _drop(*schemas: str) -> None:
    connection.set_schema_to_public()
    Tenant.objects.filter(schema_name__in=schemas).delete()
    with connection.cursor() as cursor:
        for schema in schemas:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def new_schema(tenant_db) -> Iterator[Callable[[], str]]:
    """Makes unique valid schema names; drops whatever schemas (and tenants) they became."""
    made: list[str] = []

    def make() -> str:
        made.append(f"sc{uuid.uuid4().hex[:12]}")  # also a valid tenant slug: no "_"
        return made[-1]

    template_ensure()
    yield make
    _drop(*made)


def _rows(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _strip(schema: str, text: str | None) -> str | None:
    if text is None:
        return None
    return re.sub(rf'(?<![\w"])("{re.escape(schema)}"|{re.escape(schema)})\.', "", text)


def _structure(schema: str) -> dict[str, set[tuple[Any, ...]]]:
    """Everything migrations name, read from pg_catalog for one namespace only.

    Deparsed with the schema alone on the search_path, so its own objects print unqualified and
    two schemas' texts compare equal when they say the same thing.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL search_path = "{schema}"')
        cursor.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", [schema])
        (nsp,) = cursor.fetchone()
        queries = {
            "tables": """
                SELECT relname, relkind, relpersistence, reloptions::text,
                       obj_description(oid, 'pg_class')
                FROM pg_class WHERE relnamespace = %(nsp)s AND relkind NOT IN ('i', 't')""",
            "columns": """
                SELECT c.relname, a.attname,
                       rank() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                       format_type(a.atttypid, a.atttypmod), a.attnotnull,
                       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                       a.attstorage, a.attcompression, col_description(c.oid, a.attnum)
                FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE c.relnamespace = %(nsp)s AND c.relkind = 'r'
                  AND a.attnum > 0 AND NOT a.attisdropped""",
            "constraints": """
                SELECT k.conname, k.contype, c.relname, pg_get_constraintdef(k.oid),
                       k.condeferrable, k.condeferred, k.convalidated,
                       obj_description(k.oid, 'pg_constraint')
                FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                WHERE k.connamespace = %(nsp)s""",
            "indexes": """
                SELECT i.relname, c.relname, pg_get_indexdef(i.oid), x.indisprimary,
                       x.indisunique, obj_description(i.oid, 'pg_class')
                FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                JOIN pg_class c ON c.oid = x.indrelid
                WHERE c.relnamespace = %(nsp)s""",
            "sequences": """
                SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                       s.seqmin, s.seqmax, s.seqcache, s.seqcycle, t.relname, a.attname,
                       d.deptype
                FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
                LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                LEFT JOIN pg_class t ON t.oid = d.refobjid
                LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE c.relnamespace = %(nsp)s""",
        }
        found: dict[str, set[tuple[Any, ...]]] = {}
        for kind, sql in queries.items():
            cursor.execute(sql, {"nsp": nsp})
            found[kind] = {
                tuple(_strip(schema, v) if isinstance(v, str) else v for v in row)
                for row in cursor.fetchall()
            }
    connection.set_schema_to_public()
    return found


def _execute(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def _tables(schema: str) -> list[str]:
    return [
        row[0]
        for row in _rows(
            "SELECT relname FROM pg_class WHERE relkind = 'r'"
            " AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
            " ORDER BY relname",
            [schema],
        )
    ]


def _contents(schema: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: sorted(_rows(f'SELECT * FROM "{schema}"."{table}"'), key=repr)  # noqa: S608
        for table in _tables(schema)
    }


def _assert_same_structure(source: str, target: str) -> None:
    want, got = _structure(source), _structure(target)
    for kind in want:
        assert got[kind] == want[kind], (
            kind,
            sorted(want[kind] - got[kind], key=repr),
            sorted(got[kind] - want[kind], key=repr),
        )


# --- the template ------------------------------------------------------------------------------


def test_a_clone_of_the_template_is_structurally_identical(new_schema):
    target = new_schema()
    schema_clone(source=TEMPLATE, target=target)
    structure = _structure(TEMPLATE)
    assert ("jobs_job",) in {row[:1] for row in structure["tables"]}
    assert any(row[0] == "job_newest_idx" for row in structure["indexes"])
    assert any(row[1] == "f" and "DEFERRABLE" in row[3] for row in structure["constraints"])
    _assert_same_structure(TEMPLATE, target)
    assert connection.schema_name == "public"


def test_a_clone_of_the_template_has_its_rows_and_continues_its_identities(new_schema):
    target = new_schema()
    schema_clone(source=TEMPLATE, target=target)
    assert _contents(target) == _contents(TEMPLATE)
    assert len(_rows(f'SELECT * FROM "{target}".django_migrations')) > 10  # noqa: S608
    (top,) = _rows(f'SELECT max(id) FROM "{target}".django_content_type')[0]  # noqa: S608
    (made,) = _rows(
        f'INSERT INTO "{target}".django_content_type (app_label, model)'  # noqa: S608
        " VALUES ('sc', 'thing') RETURNING id"
    )[0]
    assert made > top
    # Its own identity sequence: the template's did not move.
    (template_next,) = _rows(
        f"SELECT pg_sequence_last_value(pg_get_serial_sequence('\"{TEMPLATE}\".django_content_type', 'id'))"
    )[0]
    assert template_next is None or template_next <= top


def test_a_tenant_created_from_the_template_works_end_to_end(new_schema):
    slug = new_schema()
    tenant = tenant_create(slug=slug, name="Clone end to end").tenant
    with tenant:
        job = Job.objects.create(type="demo.add", queue="default", submitted_by="operator")
        assert Job.objects.filter(id=job.id).exists()
    out = StringIO()
    call_command("migrate_schemas", schema_name=slug, interactive=False, stdout=out)
    assert "No migrations to apply" in out.getvalue(), out.getvalue()
    assert "Applying" not in out.getvalue()
    connection.set_schema_to_public()


# --- everything migrations could build, on a hand-made source ---------------------------------

_SOURCE_DDL = """
CREATE TABLE {s}.parent (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    code varchar(20) NOT NULL,
    qty integer NOT NULL DEFAULT 1 CONSTRAINT parent_qty_check CHECK (qty >= 0),
    span int4range,
    upper_code text GENERATED ALWAYS AS (upper(code)) STORED,
    CONSTRAINT parent_code_uniq UNIQUE (code) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT parent_span_excl EXCLUDE USING gist (span WITH &&)
);
COMMENT ON TABLE {s}.parent IS 'the parent''s table';
COMMENT ON COLUMN {s}.parent.code IS 'a code';
CREATE TABLE {s}.child (
    id serial PRIMARY KEY,
    parent_id bigint NOT NULL,
    sibling_id integer,
    ident integer GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5),
    label varchar(50) NOT NULL DEFAULT 'x',
    created timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE {s}.child ADD CONSTRAINT child_parent_fk FOREIGN KEY (parent_id)
    REFERENCES {s}.parent (id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE {s}.child ADD CONSTRAINT child_sibling_fk FOREIGN KEY (sibling_id)
    REFERENCES {s}.child (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE {s}.parent ADD COLUMN dropped_later int;
ALTER TABLE {s}.parent DROP COLUMN dropped_later;
CREATE INDEX child_label_like ON {s}.child (label varchar_pattern_ops);
CREATE INDEX child_newest ON {s}.child (created DESC, id);
CREATE UNIQUE INDEX child_label_live ON {s}.child (lower(label)) WHERE parent_id > 1;
COMMENT ON INDEX {s}.child_newest IS 'newest first';
CREATE SEQUENCE {s}.standalone START 7;
SELECT nextval('{s}.standalone'), nextval('{s}.standalone');
INSERT INTO {s}.parent (code, qty, span) VALUES ('a', 1, '[1,5)'), ('b', 2, '[5,9)');
INSERT INTO {s}.child (parent_id, label) VALUES (1, 'one'), (2, 'two');
INSERT INTO {s}.child (parent_id, sibling_id, label) VALUES (2, 1, 'three');
"""


@pytest.fixture
def source(new_schema) -> str:
    name = new_schema()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'CREATE SCHEMA "{name}"')
        cursor.execute(_SOURCE_DDL.format(s=f'"{name}"'))
    connection.set_schema_to_public()
    return name


def test_it_reproduces_every_kind_of_object_by_name(source, new_schema):
    target = new_schema()
    schema_clone(source=source, target=target)
    _assert_same_structure(source, target)
    assert _contents(target) == _contents(source)
    # Sequences continue where the source's would: serial, identity and standalone.
    sequences = dict(
        _rows(
            f"SELECT 'child', nextval('\"{target}\".child_id_seq')"
            f" UNION ALL SELECT 'parent', nextval('\"{target}\".parent_id_seq')"
            f" UNION ALL SELECT 'standalone', nextval('\"{target}\".standalone')"
        )
    )
    assert sequences == {"child": 4, "parent": 3, "standalone": 9}
    (ident,) = _rows(
        f'INSERT INTO "{target}".child (parent_id) VALUES (1) RETURNING ident'  # noqa: S608
    )[0]
    assert ident == 115  # 100, 105, 110 copied
    # The serial default calls the clone's own sequence, not the source's.
    (default,) = _rows(
        "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef"
        " WHERE adrelid = %s::regclass AND adnum = 1",
        [f'"{target}".child'],
    )[0]
    assert target in default
    # Deferred FKs and constraints work in the clone.
    with transaction.atomic():
        _execute(f'INSERT INTO "{target}".child (parent_id) VALUES (99)')  # noqa: S608
        with pytest.raises(IntegrityError, match="child_parent_fk"), transaction.atomic():
            _execute("SET CONSTRAINTS ALL IMMEDIATE")
        transaction.set_rollback(True)  # the bad row must not reach COMMIT's deferred check
    with pytest.raises(IntegrityError, match="parent_span_excl"):
        _execute(f"INSERT INTO \"{target}\".parent (code, span) VALUES ('c', '[2,3)')")  # noqa: S608


@pytest.mark.parametrize(
    ("ddl", "kind"),
    [
        ("CREATE VIEW {s}.v AS SELECT 1 AS one", "relation of kind v"),
        ("CREATE FUNCTION {s}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "function f"),
        ("CREATE TYPE {s}.mood AS ENUM ('ok')", "type mood"),
        (
            "CREATE FUNCTION {s}.tf() RETURNS trigger LANGUAGE plpgsql AS"
            " 'BEGIN RETURN NEW; END';"
            " CREATE TRIGGER t BEFORE INSERT ON {s}.parent FOR EACH ROW EXECUTE FUNCTION {s}.tf()",
            "trigger t",
        ),
        ("GRANT SELECT ON {s}.parent TO PUBLIC", "table property"),
        ("CREATE MATERIALIZED VIEW {s}.mv AS SELECT 1 AS one", "relation of kind m"),
    ],
)
def test_it_refuses_objects_it_cannot_copy_and_creates_nothing(source, new_schema, ddl, kind):
    with connection.cursor() as cursor:
        cursor.execute(ddl.format(s=f'"{source}"'))
    target = new_schema()
    with pytest.raises(SchemaCloneError, match=re.escape(kind)):
        schema_clone(source=source, target=target)
    assert not _rows("SELECT 1 FROM pg_namespace WHERE nspname = %s", [target])
    assert connection.schema_name == "public"


@pytest.mark.parametrize("target", ["public", "Bad", "a;drop", 'x"y', "tenant_template", "pg_x"])
def test_it_refuses_an_invalid_target(tenant_db, target):
    with pytest.raises(ValidationError):
        schema_clone(source=TEMPLATE, target=target)


def test_it_refuses_an_existing_target_and_leaves_it_alone(source, new_schema):
    target = new_schema()
    _execute(f'CREATE SCHEMA "{target}"')
    _execute(f'CREATE TABLE "{target}".keep_me (id int)')
    with pytest.raises(ValidationError, match="already exists"):
        schema_clone(source=source, target=target)
    assert _tables(target) == ["keep_me"]


def test_it_refuses_a_missing_source(new_schema):
    with pytest.raises(SchemaCloneError, match="does not exist"):
        schema_clone(source="sc_no_such_schema", target=new_schema())


def test_a_failure_inside_a_transaction_leaves_no_schema(source, new_schema):
    target = new_schema()

    def clone_then_fail() -> None:
        with transaction.atomic():
            schema_clone(source=source, target=target)
            raise RuntimeError("later step failed")

    with pytest.raises(RuntimeError):
        clone_then_fail()
    assert not _rows("SELECT 1 FROM pg_namespace WHERE nspname = %s", [target])


# --- cost --------------------------------------------------------------------------------------

# Catalog views that span every schema: what made django-tenants' clone grow with tenant count.
_UNFILTERED = re.compile(r"information_schema|pg_indexes|pg_tables|pg_views|pg_sequences\b", re.I)


def _timed_clone(target: str) -> tuple[float, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        schema_clone(source=TEMPLATE, target=target)
        elapsed = time.perf_counter() - started
    # django-tenants' own `SET search_path` comes and goes with its cached state: not ours.
    return elapsed, [
        q["sql"] for q in queries.captured_queries if not q["sql"].startswith("SET search_path")
    ]


def test_clone_cost_does_not_grow_with_the_number_of_schemas(new_schema):
    before, queries_before = _timed_clone(new_schema())
    started = time.perf_counter()
    for _ in range(30):
        schema_clone(source=TEMPLATE, target=new_schema())
    bulk = (time.perf_counter() - started) / 30
    after, queries_after = _timed_clone(new_schema())
    print(
        f"\nschema_clone of {TEMPLATE}: {before * 1000:.0f} ms first,"
        f" {bulk * 1000:.0f} ms mean of 30, {after * 1000:.0f} ms after 31 more schemas"
    )
    # The same statements whatever else the database holds (only the target's name differs),
    # and none reads a catalog view that spans all schemas.
    assert len(queries_after) == len(queries_before)
    assert not [q for q in queries_after if _UNFILTERED.search(q)]
    catalog = [q for q in queries_after if re.search(r"\bFROM pg_\w+", q)]
    assert catalog
    for query in catalog:
        assert re.search(r"nspname|namespace|= ANY\(|::regclass\[\]", query), query
