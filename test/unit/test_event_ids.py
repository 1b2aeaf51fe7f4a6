"""Server-made event ids are version 7 UUIDs (RFC 9562): the first 48 bits are the Unix time in
milliseconds when the id was made, so ids made later sort later (every event_id index grows at
its right edge), and the rest is random."""

from __future__ import annotations

import time
import uuid

from datastorage.domain.events import canonical_uuid, new_event_id


def test_ids_are_version_7_with_the_time_of_making() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert canonical_uuid(text) == text  # the form PostgreSQL returns
        assert before <= parsed.int >> 80 <= after
    assert len(set(ids)) == len(ids)


def test_ids_made_in_a_later_millisecond_sort_after() -> None:
    first = new_event_id()
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= start:
        time.sleep(0.0005)
    second = new_event_id()
    assert first < second
    assert uuid.UUID(first).int < uuid.UUID(second).int
