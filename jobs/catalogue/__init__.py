"""The job-type catalogue: the only things a tenant can run.

One module per job type in this package, each defining `JOB_TYPE = JobType(...)`. They are found
by scanning the package, so adding a job type means adding one module (and its tests), nothing
else. A tenant names a job type; it never names a Celery task, queue, header or task id.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match


class JobArgsError(ValueError):
    """Arguments that do not fit the job type's schema. `details` says where and why."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = details


class UnknownJobType(LookupError):
    pass


class PermanentJobError(Exception):
    """Raised by a job type when retrying cannot help (bad input from the outside world)."""


class JobCancelled(Exception):
    """Raised inside a running job of a cancellable type by `report_progress` once the job has
    been cancelled: the cooperative stop, for pools that cannot terminate a job's process
    (threads, solo). A job type lets it through; the cancel has already recorded the attempt."""


@dataclass(frozen=True)
class JobContext:
    """What a running job may know and do besides its arguments."""

    job_id: str
    attempt: int
    schema_name: str
    report_progress: Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class JobType:
    name: str
    description: str
    args_schema: Mapping[str, Any]
    run: Callable[[JobContext, dict[str, Any]], Any]
    queue: str = "default"
    time_limit_seconds: int = 300
    max_attempts: int = 3
    # Seconds before retry n (1-based) is retry_backoff_seconds * 2 ** (n - 1), capped.
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    # Valid arguments, for documentation and for tests that need a real submission of each type
    # (checked against the schema when the catalogue loads).
    examples: tuple[dict[str, Any], ...] = ()
    # The seed's task options, per job type. A soft limit raises SoftTimeLimitExceeded inside
    # the job (prefork only) before the hard limit kills it; None: no soft limit.
    soft_time_limit_seconds: int | None = None
    # No django-celery-results row: the runner records the outcome on the Job row itself (the
    # result included), which stays the source of truth.
    ignore_result: bool = False
    # How long a result row is kept; None: the tenant plan's retention (jobs.maintenance).
    result_expires_seconds: int | None = None
    # Whether a cancel may stop a running job of this type (jobs.services.transitions.job_cancel):
    # its worker's process is terminated (prefork), or the job stops at its next progress report
    # (JobCancelled). False for a type whose effect cannot be taken back halfway and whose kill
    # would leave unknown what happened (email.send): a running job then finishes and its outcome
    # stands; a cancel of the job alone is refused, a workflow's cancel cancels only the steps
    # after it. A job that has not started is cancellable whatever this says.
    cancellable: bool = True
    # Workflows (jobs.services.workflows). `result_schema`: what `run` returns, for type-checking
    # a chain at submission; None: anything. `step_args_schema`: the arguments as a later step of
    # a workflow, where `input` is the previous step's result; None: the type takes no input and
    # can only be a workflow's first step.
    result_schema: Mapping[str, Any] | None = None
    step_args_schema: Mapping[str, Any] | None = None
    validator: Draft202012Validator = field(init=False, repr=False, compare=False)
    step_validator: Draft202012Validator | None = field(init=False, repr=False, compare=False)
    before_input_validator: Draft202012Validator | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        Draft202012Validator.check_schema(self.args_schema)
        object.__setattr__(self, "validator", Draft202012Validator(self.args_schema))
        step_validator = before_input = None
        if self.step_args_schema is not None:
            Draft202012Validator.check_schema(self.step_args_schema)
            if "input" not in self.step_args_schema.get("properties", {}):
                raise ValueError(f"{self.name}: step_args_schema must describe `input`")
            step_validator = Draft202012Validator(self.step_args_schema)
            # The same, with `input` absent and not allowed: a step as submitted.
            relaxed = dict(self.step_args_schema)
            relaxed["properties"] = {**relaxed["properties"], "input": False}
            relaxed["required"] = [n for n in relaxed.get("required", ()) if n != "input"]
            before_input = Draft202012Validator(relaxed)
        object.__setattr__(self, "step_validator", step_validator)
        object.__setattr__(self, "before_input_validator", before_input)
        if self.result_schema is not None:
            Draft202012Validator.check_schema(self.result_schema)
        if self.soft_time_limit_seconds is not None and not (
            0 < self.soft_time_limit_seconds < self.time_limit_seconds
        ):
            raise ValueError(f"{self.name}: the soft time limit must be below the hard one")
        for example in self.examples:
            self.validate_args(example)

    @property
    def input_schema(self) -> Mapping[str, Any] | None:
        """The schema of the `input` this type accepts as a later workflow step, or None."""
        if self.step_args_schema is None:
            return None
        schema: Mapping[str, Any] = self.step_args_schema["properties"]["input"]
        return schema

    def validate_args(self, args: Any, *, as_step: bool = False) -> dict[str, Any]:
        """`as_step`: as a later workflow step, `input` included (step_args_schema)."""
        return self._validate(self.step_validator if as_step else self.validator, args)

    def _validate(self, validator: Draft202012Validator | None, args: Any) -> dict[str, Any]:
        if validator is None:
            raise JobArgsError(
                f"{self.name} takes no input, so it can only be a workflow's first step.",
                [{"path": "(root)", "message": "no step_args_schema"}],
            )
        errors = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
        if errors:
            details = [
                {"path": "/".join(str(p) for p in error.path) or "(root)", "message": error.message}
                for error in errors[:20]
            ]
            best = best_match(errors)
            where = "/".join(str(p) for p in best.path)
            raise JobArgsError(
                f"Invalid args for {self.name}: {best.message}" + (f" at {where}" if where else ""),
                details,
            )
        assert isinstance(args, dict)  # every catalogue schema has "type": "object"
        return args

    def validate_step_args_before_input(self, args: Any) -> dict[str, Any]:
        """A later workflow step's arguments as submitted, before its `input` exists: checked
        against step_args_schema with `input` left out (its type is checked against the previous
        step's result_schema instead: jobs.services.workflows)."""
        return self._validate(self.before_input_validator, args)

    def retry_countdown(self, attempt: int) -> float:
        return float(
            min(self.retry_backoff_seconds * 2 ** (attempt - 1), self.retry_backoff_max_seconds)
        )


@cache
def catalogue() -> dict[str, JobType]:
    """Every job type, by name, from the modules of this package."""
    found: dict[str, JobType] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        job_type = getattr(module, "JOB_TYPE", None)
        if not isinstance(job_type, JobType):
            continue
        if job_type.name in found:
            raise RuntimeError(f"job type {job_type.name} is defined twice")
        found[job_type.name] = job_type
    return found


def job_type_get(name: str) -> JobType:
    try:
        return catalogue()[name]
    except KeyError:
        raise UnknownJobType(name) from None


def job_type_cancellable(name: str) -> bool:
    """Whether a running job of type `name` can be stopped. A type that left the catalogue is:
    nothing of it can still be worth finishing."""
    try:
        return job_type_get(name).cancellable
    except UnknownJobType:
        return True
