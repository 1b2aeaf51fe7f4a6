"""Connections through a transaction pooler carry no session state (docs/scaling.md): PgBouncer
refuses the `options` startup parameter, and prepared statements would be looked up on whichever
server
session the next transaction lands on."""

from __future__ import annotations

from datastorage.config import load_settings
from datastorage.store.connect import session_kwargs

URL = {"DATASTORAGE_DATABASE_URL": "postgresql://u@h:5432/db"}


def test_direct_connections_carry_utc_and_the_statement_timeout_as_startup_options():
    kwargs = session_kwargs(load_settings(URL), "datastorage")
    assert kwargs["options"] == (
        "-c TimeZone=UTC -c statement_timeout=30000"
        " -c tcp_keepalives_idle=7 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
    )
    assert kwargs["autocommit"] is True
    assert kwargs["tcp_user_timeout"] == 20000


def test_without_a_tcp_timeout_connections_keep_the_os_defaults():
    kwargs = session_kwargs(load_settings({**URL, "DATASTORAGE_DB_TCP_TIMEOUT": "0"}), "x")
    assert kwargs["options"] == "-c TimeZone=UTC -c statement_timeout=30000"
    assert not {"keepalives", "tcp_user_timeout"} & kwargs.keys()


def test_pooled_connections_send_no_options_and_prepare_nothing():
    settings = load_settings({**URL, "DATASTORAGE_DATABASE_POOLER": "pgbouncer"})
    kwargs = session_kwargs(settings, "datastorage", statement_timeout=5)
    assert "options" not in kwargs
    assert kwargs["prepare_threshold"] is None
    assert kwargs["application_name"] == "datastorage"  # PgBouncer forwards it
