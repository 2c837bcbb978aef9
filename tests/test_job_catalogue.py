"""The job-type catalogue: one module per type, each complete on its own."""

from __future__ import annotations

import pytest

from jobs.catalogue import JobArgsError, JobType, catalogue


@pytest.mark.parametrize("name", sorted(catalogue()))
def test_every_job_type_brings_valid_examples_of_its_arguments(name):
    # Tests that submit every type (the API fuzz test) take them from here, so adding a type
    # means adding its module, nothing else.
    job_type = catalogue()[name]
    assert job_type.examples
    for example in job_type.examples:
        assert job_type.validate_args(example) == example


def test_an_example_that_breaks_its_own_schema_is_refused_when_the_catalogue_loads():
    with pytest.raises(JobArgsError):
        JobType(
            name="demo.broken",
            description="",
            args_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
            run=lambda context, args: None,
            examples=({"n": "not a number"},),
        )
