"""Where rows live: look for a row in every schema of the database, public included."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection


def schemas_with_table(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = %s",
            [table],
        )
        return [row[0] for row in cursor.fetchall()]


def schemas_holding(table: str, column: str, values: Iterable[str]) -> dict[str, set[str]]:
    """For each value, the set of schemas whose `table` has a row with `column` = value."""
    wanted = [str(v) for v in values]
    found: dict[str, set[str]] = {v: set() for v in wanted}
    with connection.cursor() as cursor:
        for schema in schemas_with_table(table):
            # Identifiers come from information_schema and the test itself, never from input.
            cursor.execute(
                f'SELECT {column}::text FROM "{schema}"."{table}" WHERE {column}::text = ANY(%s)',  # noqa: S608
                [wanted],
            )
            for (value,) in cursor.fetchall():
                found[value].add(schema)
    return found
