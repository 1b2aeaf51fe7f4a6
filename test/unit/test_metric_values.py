"""The write path's metric shortcuts: the cached process id follows a fork (prometheus_client's
multiprocess files are per process), `labelled` is `labels()` looked up once, and `observe_many`
exposes what one observe() per amount would."""

from __future__ import annotations

import os

import pytest

from datastorage.metrics import AUDIT_TRACES, _ProcessId, labelled


def test_cached_process_id_is_the_childs_own_after_a_fork():
    process_id = _ProcessId()
    assert process_id() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child reports what the cached id says there, then leaves at once
        os.write(write, str(process_id()).encode())
        os._exit(0)
    os.close(write)
    reported = int(os.read(read, 32))
    os.close(read)
    os.waitpid(child, 0)
    assert reported == child
    assert process_id() == os.getpid()


def test_labelled_is_the_metrics_own_child():
    child = labelled(AUDIT_TRACES, "gateway", "success")
    assert child is AUDIT_TRACES.labels("gateway", "success")
    assert labelled(AUDIT_TRACES, "gateway", "success") is child


def test_observe_many_exposes_what_one_observe_per_amount_does():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from datastorage.metrics import observe_many

    amounts = [0.0, 0.01, 0.010001, 0.5, 1, 4.99, 5, 7, 86400, 86400.5, 1e9, 0.2, 0.2]
    buckets = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400)
    exposed = []
    for bulk in (False, True):
        registry = CollectorRegistry()
        lag = Histogram("lag_seconds", "lag", ["service"], buckets=buckets, registry=registry)
        child = lag.labels("gateway")
        if bulk:
            observe_many(child, amounts[:5])
            observe_many(child, amounts[5:])
            observe_many(child, [])
        else:
            for amount in amounts:
                child.observe(amount)
        exposed.append(
            {
                name: float(value)
                for name, value in (
                    line.rsplit(" ", 1)
                    for line in generate_latest(registry).decode().splitlines()
                    if not line.startswith("#") and "_created" not in line
                )
            }
        )
    # The same buckets and count; the sum up to the order of the float additions.
    sums = [values.pop('lag_seconds_sum{service="gateway"}') for values in exposed]
    assert exposed[0] == exposed[1]
    assert sums[1] == pytest.approx(sums[0], rel=1e-12)
    assert exposed[1]['lag_seconds_bucket{le="0.01",service="gateway"}'] == 2
    assert exposed[1]['lag_seconds_count{service="gateway"}'] == 13
