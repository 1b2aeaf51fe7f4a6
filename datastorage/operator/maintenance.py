"""Partition maintenance: keep the month window, repair it, retire old months (docs/operations.md).

One pass, every step idempotent and UTC-based:

1. take the maintenance advisory lock (another replica holding it is not a failure: it is doing
   the same work right now);
2. finalize detaches left pending by an interrupted pass;
3. ensure the current month and `partition_premake` months ahead (create, or re-attach);
4. re-attach other detached month tables that are still inside the retention period;
5. retire months older than the retention period: `DETACH ... CONCURRENTLY` (writes to other
   months carry on), then `DROP TABLE`; in dry-run mode only say what would be retired. A
   month holding events of a correlation under legal hold (docs/compliance.md) is not dropped: its
   other events are deleted and the held ones stay in place, attached, served and provable as
   before,
   until a pass after the release finds none held and retires the month. Each month's
   decision and action run under the holds lock (`store.holds`), so a hold placed concurrently
   is either seen or waits until the month is done. With `DATASTORAGE_ARCHIVE_URL` the month is
   first archived and verified (`services.archive`); if that fails the month is kept whole,
   `datastorage_archive_failures_total` counts it and the next pass tries again;
6. publish the partition metrics.

A failing step is reported and the pass carries on with the next one; the pass then counts as
failed (metric) and the next pass retries. The operator runs `maintenance_loop` (first pass at
start-up); `datastorage partitions ensure` runs one pass through `run_pass_sync`.
All SQL lives in `datastorage.store.partitions`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from datastorage.config import Settings
from datastorage.metrics import (
    ARCHIVE_FAILURES,
    PARTITION_CREATED,
    PARTITION_MAINTENANCE_FAILURES,
    PARTITION_MAINTENANCE_LAST_SUCCESS,
    PARTITION_MONTHS_AHEAD,
    PARTITIONS,
)
from datastorage.services.archive import Archive, ArchiveError
from datastorage.store import export, holds, partitions
from datastorage.store.connect import (
    AsyncConnection,
    SessionRequired,
    connect_async,
    require_session,
)
from datastorage.store.errors import DatabaseError, is_connection_lost
from datastorage.store.partitions import PartitionSummary

log = logging.getLogger(__name__)

LOCK_HELD_ELSEWHERE = "another replica holds the maintenance lock; skipped this pass"
# DETACH CONCURRENTLY and ATTACH take only SHARE UPDATE EXCLUSIVE on audit_events, which does not
# conflict with inserts, so they may wait longer for their locks than the write path does.
_DETACH_LOCK_TIMEOUT = 30.0
RETRY_AFTER_FAILURE = 60.0


@dataclass
class MaintenanceReport:
    dry_run: bool
    started_at: dt.datetime
    window: list[dt.date] = field(default_factory=list)
    retain_from: dt.date | None = None
    lock_acquired: bool = True
    finalized: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    reattached: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    kept_for_holds: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    would_retire: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    summary: PartitionSummary | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return bool(
            self.finalized or self.created or self.reattached or self.retired or self.kept_for_holds
        )

    def lines(self) -> list[str]:
        mode = " (dry run)" if self.dry_run else ""
        stamp = self.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        out = [f"partition maintenance{mode} at {stamp}"]
        if self.window:
            out.append(
                f"window: {self.window[0]:%Y-%m} .. {self.window[-1]:%Y-%m}; retention keeps "
                f"{self.retain_from:%Y-%m} and later"
            )
        if not self.lock_acquired:
            out.append(LOCK_HELD_ELSEWHERE)
        out += [f"finalized pending detach of {name}" for name in self.finalized]
        out += [f"created {name}" for name in self.created]
        out += [f"re-attached {name}" for name in self.reattached]
        out += [f"retired {name} (detached concurrently, dropped)" for name in self.retired]
        out += [f"archive: {entry}" for entry in self.archived]
        out += [f"kept {entry} under legal hold" for entry in self.kept_for_holds]
        out += [f"would retire {name} (dry run: nothing retired)" for name in self.would_retire]
        if self.lock_acquired and not (self.changed or self.would_retire or self.errors):
            out.append("nothing to do")
        out += [f"ERROR {message}" for message in self.errors]
        if self.summary is not None:
            s = self.summary
            out.append(
                f"partitions: {s.attached} attached, {s.detached} detached, "
                f"{s.months_ahead} month(s) ahead, current month "
                f"{'attached' if s.current_attached else 'MISSING'}"
            )
        return out


async def _connect(settings: Settings) -> AsyncConnection:
    # statement_timeout off: DETACH CONCURRENTLY waits for older transactions to finish;
    # every DDL step carries its own lock_timeout instead. The session lock and the session
    # lock_timeout of the detach steps need a session: not through a transaction pooler.
    require_session(settings, "partition maintenance")
    return await connect_async(settings, "datastorage-maintenance", statement_timeout=0)


async def run_pass(
    settings: Settings, *, dry_run: bool, now: dt.datetime | None = None
) -> MaintenanceReport:
    """One maintenance pass. Raises only when the database cannot be reached at all."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    report = MaintenanceReport(
        dry_run=dry_run,
        started_at=now,
        window=partitions.window(settings.partition_premake, now),
        retain_from=partitions.retention_cutoff(settings.partition_retention_months, now),
    )
    try:
        conn = await _connect(settings)
    except DatabaseError:
        PARTITION_MAINTENANCE_FAILURES.inc()
        raise
    try:
        async with conn:
            report.lock_acquired = await partitions.try_maintenance_lock(conn)
            if report.lock_acquired:
                try:
                    await _maintain(conn, settings, report)
                finally:
                    if not conn.closed:
                        await partitions.release_maintenance_lock(conn)
            report.summary = partitions.summarize(await partitions.partition_states(conn), now)
    except DatabaseError as exc:  # the connection itself failed mid-pass
        report.errors.append(f"database: {exc}".strip())
    except Exception:  # a bug: count it, never report a success
        PARTITION_MAINTENANCE_FAILURES.inc()
        raise
    _publish(report)
    return report


async def _maintain(conn: AsyncConnection, settings: Settings, report: MaintenanceReport) -> None:
    lock_timeout = settings.partition_lock_timeout
    assert report.retain_from is not None
    for state in await partitions.partition_states(conn):
        if state.detach_pending:
            done, _ = await _step(
                report,
                f"finalize detach of {state.name}",
                partitions.finalize_detach(conn, state.month, _DETACH_LOCK_TIMEOUT),
            )
            if done:
                report.finalized.append(state.name)

    for month in report.window:
        name = partitions.partition_name(month)
        _, outcome = await _step(
            report, f"ensure {name}", partitions.ensure_month(conn, month, lock_timeout)
        )
        if outcome == "created":
            report.created.append(name)
            PARTITION_CREATED.labels("maintenance").inc()
        elif outcome == "attached":
            report.reattached.append(name)

    states = await partitions.partition_states(conn)
    for state in states:
        if state.attached or state.month in report.window or state.month < report.retain_from:
            continue
        done, _ = await _step(
            report,
            f"re-attach {state.name}",
            partitions.attach_month(conn, state.month, _DETACH_LOCK_TIMEOUT),
        )
        if done:
            report.reattached.append(state.name)

    archive = _archive_target(settings, report)
    for state in states:
        if state.month >= report.retain_from:
            continue
        if report.dry_run:
            report.would_retire.append(state.name)
            continue
        if settings.archive_url:
            archived_state = await _archive(conn, report, state, archive)
            if archived_state is None:
                continue  # kept whole; counted; the next pass retries
            state = archived_state
        if await _retire(conn, report, state, lock_timeout):
            report.retired.append(state.name)


def _archive_target(settings: Settings, report: MaintenanceReport) -> Archive | None:
    if not settings.archive_url:
        return None
    try:
        return Archive(settings)
    except Exception as exc:  # a bad URL or key file: nothing may be retired
        report.errors.append(f"archive target: {exc}")
        return None


async def _archive(
    conn: AsyncConnection,
    report: MaintenanceReport,
    state: partitions.PartitionState,
    archive: Archive | None,
) -> partitions.PartitionState | None:
    """Archive and verify the month before anything of it is removed. Returns the month's state
    after (a table an interrupted pass left detached is attached again so the export sees it),
    or None when it could not be archived: then it is kept, counted, and retried next pass."""
    try:
        if archive is None:
            raise ArchiveError("no usable archive target")
        if not state.attached:
            await partitions.attach_month(conn, state.month, _DETACH_LOCK_TIMEOUT)
            state = dataclasses.replace(state, attached=True, detach_pending=False)
        rows = await export.count_month(conn, state.name)
        report.archived.append(await archive.ensure_archived(conn, state.month, rows))
        return state
    except (ArchiveError, DatabaseError) as exc:
        if isinstance(exc, DatabaseError) and is_connection_lost(exc):
            raise
        ARCHIVE_FAILURES.inc()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.errors.append(f"archive {state.name}: {message}; month kept")
        log.warning("archive of %s failed, month kept: %s", state.name, message)
        return None


async def _retire(
    conn: AsyncConnection,
    report: MaintenanceReport,
    state: partitions.PartitionState,
    lock_timeout: float,
) -> bool:
    """Retire one month under the holds lock: hold changes wait until it is done."""
    await holds.lock_for_retirement(conn)
    try:
        looked, has_held = await _step(
            report,
            f"look for held events in {state.name}",
            holds.month_has_held_events(conn, state.month),
        )
        if not looked:
            return False
        if has_held:
            await _keep_held_events(conn, report, state)
            return False
        return await _detach_and_drop(conn, report, state, lock_timeout)
    finally:
        if not conn.closed:
            await holds.unlock_after_retirement(conn)


async def _keep_held_events(
    conn: AsyncConnection, report: MaintenanceReport, state: partitions.PartitionState
) -> None:
    """Delete the month's events that are not held; the held ones stay where they are. A table
    left detached by an interrupted pass is attached again first so its held events are served."""
    if not state.attached:
        attached, _ = await _step(
            report,
            f"re-attach {state.name} (it holds held events)",
            partitions.attach_month(conn, state.month, _DETACH_LOCK_TIMEOUT),
        )
        if not attached:
            return
    done, deleted = await _step(
        report,
        f"delete unheld events of {state.name}",
        holds.delete_unheld_events(conn, state.month),
    )
    if done:
        report.kept_for_holds.append(f"{state.name} ({deleted} unheld events deleted)")


async def _detach_and_drop(
    conn: AsyncConnection,
    report: MaintenanceReport,
    state: partitions.PartitionState,
    lock_timeout: float,
) -> bool:
    """Detach concurrently (if still attached), then drop. A pass interrupted between the two
    leaves a detached table, which the next pass drops."""
    if state.attached and not state.detach_pending:
        detached, _ = await _step(
            report,
            f"detach {state.name}",
            partitions.detach_month_concurrently(conn, state.month, _DETACH_LOCK_TIMEOUT),
        )
        if not detached:
            return False
    done, dropped = await _step(
        report,
        f"drop {state.name}",
        partitions.drop_detached_month(conn, state.month, lock_timeout),
    )
    if done and not dropped:
        report.errors.append(f"drop {state.name}: still attached, not dropped")
    return bool(done and dropped)


async def _step(
    report: MaintenanceReport, action: str, work: Awaitable[object]
) -> tuple[bool, object]:
    """Run one DDL step: (True, its result), or (False, None) after reporting a database
    error, so the pass carries on with the next step."""
    try:
        return True, await work
    except DatabaseError as exc:
        if is_connection_lost(exc):
            raise  # the connection is gone: no later step can work either
        error = exc
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    report.errors.append(f"{action}: {message}")
    log.warning("partition maintenance: %s failed: %s", action, message)
    return False, None


def _publish(report: MaintenanceReport) -> None:
    if report.summary is not None:
        PARTITIONS.labels("attached").set(report.summary.attached)
        PARTITIONS.labels("detached").set(report.summary.detached)
        PARTITION_MONTHS_AHEAD.set(report.summary.months_ahead)
    if not report.ok:
        PARTITION_MAINTENANCE_FAILURES.inc()
    elif report.lock_acquired:
        PARTITION_MAINTENANCE_LAST_SUCCESS.set(time.time())


def run_pass_sync(settings: Settings, *, dry_run: bool) -> list[str]:
    """`datastorage partitions ensure`: one pass, as printable lines."""
    try:
        report = asyncio.run(run_pass(settings, dry_run=dry_run))
    except DatabaseError as exc:
        return [f"ERROR partition maintenance failed: database unreachable: {exc}".strip()]
    return report.lines()


async def maintenance_loop(
    settings: Settings,
    active: Callable[[], Awaitable[bool]] | None = None,
    standby_check: float | None = None,
) -> None:
    """The operator's loop: a pass at start-up, then one every `partition_maintenance_interval`
    seconds (0: the start-up pass only). A failed pass is retried sooner (after at most
    `RETRY_AFTER_FAILURE` seconds), so a database that was down at start-up does not leave the
    window unensured for a whole interval. With `active` (peering), a replica that is not the
    active one skips its passes and asks again every `standby_check` seconds, so it takes over
    soon after the active one dies. Runs until cancelled."""
    interval = settings.partition_maintenance_interval
    while True:
        if active is not None and not await active():
            log.debug("partition maintenance: standing by (another operator replica is active)")
            await asyncio.sleep(min(interval, standby_check or interval) or RETRY_AFTER_FAILURE)
            continue
        ok = False
        try:
            report = await run_pass(settings, dry_run=settings.partition_dry_run)
        except DatabaseError as exc:
            log.error("partition maintenance failed: database unreachable: %s", exc)
        except SessionRequired as exc:  # misconfigured: counted and said at every pass
            PARTITION_MAINTENANCE_FAILURES.inc()
            log.error("partition maintenance cannot run: %s", exc)
        except Exception:  # a bug must not kill the loop of a long-running sidecar
            log.exception("partition maintenance failed")
        else:
            ok = report.ok
            if not ok:
                level = logging.WARNING
            elif report.changed or report.would_retire:
                level = logging.INFO
            else:
                level = logging.DEBUG
            for line in report.lines():
                log.log(level, "%s", line)
        if interval <= 0:
            return
        await asyncio.sleep(interval if ok else min(interval, RETRY_AFTER_FAILURE))
