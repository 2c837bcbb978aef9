"""Submission limits: a tenant's submit rate, enforced across the cluster before anything is
written (CONTRACT.md "Limits": over it the API answers 429 with Retry-After and accepts nothing).

Each tenant has one token bucket in Redis (saas_platform.lib.rate_buckets) sized by
`billing.limits.tenant_limits(...).submit_rate`: a job costs a token, a batch as many tokens as
it has jobs, taken all or none. A batch larger than the burst is admitted once the bucket is full
and leaves it in debt, so any batch the API accepts is possible and the long-run rate holds.

Tokens pay for requests, not for accepted jobs: a submission refused afterwards (a 422, a 409)
has still used its tokens, as a flood of invalid requests costs the platform as much as valid
ones.

The monthly job quota (billing.quotas) is checked in the same step, from the month's Redis
counter (a cap on the bucket's take, one round trip for both): a request over it is refused
whatever the bucket holds, and uses no tokens.

If Redis is unreachable the submission goes through (logged): accepted work is never refused
because counters are down, as for the rest of the submit path.
"""

from __future__ import annotations

import logging
import math

import redis
from django.utils import timezone
from saas_platform.lib.rate_buckets import BucketSpec, CapReached, bucket_take
from saas_platform.lib.state_redis import state_key

from billing.limits import Rate, tenant_limits
from billing.quotas import quota_cap, quota_refused
from jobs.models import Job, JobBatch, Workflow

logger = logging.getLogger(__name__)


class SubmitRateExceeded(Exception):
    """Over the tenant's submit rate; nothing was written. Retry in `retry_after` seconds."""

    def __init__(self, *, retry_after: int, rate: Rate, wanted: int) -> None:
        super().__init__(f"Over the submit rate of {rate.text} (burst {rate.burst}).")
        self.retry_after = retry_after
        self.rate = rate
        self.wanted = wanted


def submit_bucket(tenant_id: int, rate: Rate) -> BucketSpec:
    return BucketSpec(key=state_key("submit", tenant_id), rate=rate.per_second, burst=rate.burst)


def submission_admit(
    *,
    tenant_id: int,
    jobs: int = 1,
    idempotency_key: str | None = None,
    batch: bool = False,
    workflow: bool = False,
) -> None:
    """Take `jobs` tokens from the tenant's submit bucket, or raise SubmitRateExceeded (or
    billing.quotas.QuotaExceeded over the monthly quota).

    Call it before submitting, with the tenant active (a refused replay is looked up in its
    schema). A replay of an Idempotency-Key is never refused: when the bucket refuses a keyed
    request, one indexed lookup tells whether the key is already stored, and if it is the request
    goes on uncharged (the service returns the stored job, or answers a 409; neither writes).
    A replay that finds tokens pays like any request: telling it apart first would cost every
    keyed submission a second lookup of the key, which the service makes anyway.
    """
    rate = tenant_limits(tenant_id).submit_rate
    now = timezone.now()
    try:
        # The quota and the rate in one round trip: the quota is a cap on the bucket's take, so
        # a request over it takes no tokens.
        take = bucket_take(
            submit_bucket(tenant_id, rate),
            jobs,
            all_or_none=True,
            cap=quota_cap(tenant_id=tenant_id, jobs=jobs, now=now),
        )
    except CapReached as refused:
        # A replay stores nothing new, so it needs no quota (and no tokens).
        if idempotency_key is not None and _stored(idempotency_key, batch=batch, workflow=workflow):
            return
        raise quota_refused(refused, now=now) from None
    except redis.RedisError as exc:
        logger.warning("quota and submit rate of tenant %s not checked (Redis): %s", tenant_id, exc)
        return
    if take.granted:
        return
    if idempotency_key is not None and _stored(idempotency_key, batch=batch, workflow=workflow):
        return
    # Whole seconds (the header's unit), rounded up so that a client waiting that long finds the
    # tokens there; at least 1, since 0 would invite an immediate retry.
    raise SubmitRateExceeded(retry_after=max(1, math.ceil(take.ready_in)), rate=rate, wanted=jobs)


def _stored(idempotency_key: str, *, batch: bool, workflow: bool) -> bool:
    # Batches' and workflows' keys are apart from single jobs' (README, "Idempotency").
    model: type[Job | JobBatch | Workflow] = Workflow if workflow else JobBatch if batch else Job
    return model.objects.filter(idempotency_key=idempotency_key).exists()
