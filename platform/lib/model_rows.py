"""Model instances from the rows of a SELECT written once, as the ORM makes them from its own.

For a hot path whose query never changes shape: the ORM compiles a QuerySet to SQL on every
evaluation. The API key lookup of every request (the key joined with its tenant) cost 0.59 ms of
CPU through `select_related(...).first()` against 0.08 ms for a plain SELECT of one row on the
same connection (in process, 2,000 calls each, 2026-12-04), a quarter of a submit's CPU. Here the
column list is composed once per process from the model's fields, and each row's values go
through the same converters the compiler applies (a field's `from_db_value`: JSONField's
parsing, for one) before `Model.from_db`, so the instance is the one the ORM would have built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model

_Converter = Callable[[Any, Any, Any], Any]


@dataclass(frozen=True)
class ModelColumns:
    """A model's concrete columns under a table alias, in field order."""

    model: type[Model]
    # `"alias"."column", ...`: the SELECT list's part for this model.
    sql: str
    attnames: tuple[str, ...]
    # Per column, the expression the converters are called with and the converters (in order).
    converters: tuple[tuple[Any, tuple[_Converter, ...]], ...]

    def __len__(self) -> int:
        return len(self.attnames)

    def instance(self, values: Sequence[Any]) -> Any:
        """The instance for this model's part of a row (exactly len(self) values)."""
        converted = list(values)
        for position, (expression, converters) in enumerate(self.converters):
            value = converted[position]
            for converter in converters:
                value = converter(value, expression, connection)
            converted[position] = value
        return self.model.from_db(connection.alias, list(self.attnames), converted)


@functools.cache
def model_columns(model: type[Model], alias: str) -> ModelColumns:
    """The columns of `model` for a SELECT in which its table is `alias`. Composed once per
    process (the default database's backend: PostgreSQL's operations add no converters of
    their own, so those found here hold for every connection)."""
    quote = connection.ops.quote_name
    # Every concrete field, generated ones too, as the ORM selects them.
    fields = list(model._meta.concrete_fields)
    converters = []
    for field in fields:
        column = field.get_col(alias)
        found = [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]
        converters.append((column, tuple(found)))
    return ModelColumns(
        model=model,
        sql=", ".join(f"{quote(alias)}.{quote(field.column)}" for field in fields),
        attnames=tuple(field.attname for field in fields),
        converters=tuple(converters),
    )
