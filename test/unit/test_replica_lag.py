"""The replica lag rule (docs/scaling.md): the age of the newest primary WAL sample the replica has
replayed past — zero for a complete replica of an idle primary, growing while replay stalls."""

from __future__ import annotations

import math
from collections import deque

from datastorage.store.replica import lag_from_samples


def test_a_replica_that_replayed_the_newest_sample_is_as_old_as_that_sample():
    samples = deque([(10.0, 100), (11.0, 200), (12.0, 300)])
    assert lag_from_samples(samples, 300, now=12.25) == 0.25
    assert lag_from_samples(samples, 350, now=12.25) == 0.25


def test_an_idle_primary_does_not_make_a_complete_replica_late():
    # The position stands still: every sample is replayed, the newest one counts.
    samples = deque([(t, 500) for t in (1.0, 2.0, 3.0, 4.0)])
    assert math.isclose(lag_from_samples(samples, 500, now=4.1), 0.1)


def test_a_stalled_replica_is_as_late_as_the_last_sample_it_passed():
    samples = deque([(10.0, 100), (11.0, 200), (12.0, 300), (13.0, 400)])
    assert math.isclose(lag_from_samples(samples, 250, now=13.5), 2.5)
    assert math.isclose(lag_from_samples(samples, 100, now=13.5), 3.5)


def test_a_replica_behind_every_sample_kept_is_infinitely_late():
    samples = deque([(10.0, 100), (11.0, 200)])
    assert lag_from_samples(samples, 99, now=11.0) == math.inf
    assert lag_from_samples(deque(), 99, now=11.0) == math.inf
