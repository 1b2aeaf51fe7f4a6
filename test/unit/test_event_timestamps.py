"""An event_timestamp already in the stored form is kept as sent; every other form is
re-formatted. Either way the stored text is what format_timestamp makes of the instant."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from datastorage.domain.events import _canonical_utc, format_timestamp, parse_timestamp

instants = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(dt.UTC)
)
offsets = st.integers(-15 * 60, 15 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))


def spellings(moment: dt.datetime, zone: dt.timezone) -> list[str]:
    local = moment.astimezone(zone)
    iso = local.isoformat()
    return [
        iso,
        iso.replace("+00:00", "Z"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        moment.strftime("%Y-%m-%dt%H:%M:%S.%fz"),
        moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    ]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(moment=instants, zone=offsets)
def test_kept_spelling_is_the_stored_form(moment, zone):
    for text in spellings(moment, zone):
        stored = format_timestamp(parse_timestamp(text))
        if _canonical_utc(text):
            assert text == stored
