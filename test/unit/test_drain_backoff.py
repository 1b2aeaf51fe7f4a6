"""Pure parts of the DLQ drain worker: backoff sequence, retry delays, error descriptions."""

from __future__ import annotations

from datastorage.dlq.drain import Backoff, describe_error, retry_delay


def test_backoff_doubles_from_one_second_up_to_thirty():
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_starts_over_after_reset():
    backoff = Backoff(1.0, 30.0)
    for _ in range(4):
        backoff.next()
    backoff.reset()
    assert [backoff.next() for _ in range(3)] == [1, 2, 4]


def test_backoff_never_exceeds_a_maximum_below_the_initial_delay():
    backoff = Backoff(5.0, 2.0)
    assert [backoff.next() for _ in range(3)] == [2, 2, 2]


def test_retry_delay_of_a_failing_record_grows_with_its_attempts():
    assert [retry_delay(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry_delay(0, 1.0, 30.0) == 1


def test_describe_error_names_the_exception_type():
    assert describe_error(ValueError("value too long")) == "ValueError: value too long"
    assert describe_error(TimeoutError()) == "TimeoutError"
