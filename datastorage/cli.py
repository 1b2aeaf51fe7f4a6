"""`datastorage` command line: serve, operator, migrate, dev, partitions, dlq, log, verify, archive.

A bad or missing setting prints one line naming it and exits with code 2.

Each subcommand imports what it runs inside its own function, on purpose: `migrate` must not
load Starlette or kopf, `serve` must not load kopf, `operator` must not load the HTTP app, and
a configuration error must be reported before any of them is imported.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from datastorage.config import ConfigError, Settings, load_settings
from datastorage.logs import setup_logging


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _human_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.server import serve

    if args.server:
        settings = settings.replace(server=args.server)
    if args.workers:
        settings = settings.replace(workers=args.workers)
    settings.require_database_url()
    from datastorage.services.ledger import configured_signer

    configured_signer(settings)  # a bad signing key stops the server before any worker starts
    return serve(settings, worker_process=args.worker_process, log_process=args.log_process)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.store.migrate import migrate

    applied = migrate(settings.require_database_url(), settings.partition_premake)
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.dev import run_dev

    return run_dev(settings)


def cmd_operator(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.operator.main import run_operator

    namespaces = tuple(args.namespace or ()) or settings.operator_namespaces
    return run_operator(settings, namespaces=namespaces, all_namespaces=args.all_namespaces)


def cmd_partitions(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.store import partitions
    from datastorage.store.connect import connect_sync

    if args.action == "ensure":
        from datastorage.operator.maintenance import run_pass_sync

        report = run_pass_sync(settings, dry_run=args.dry_run or settings.partition_dry_run)
        for line in report:
            print(line)
        if any(line.startswith("ERROR") for line in report):
            return 1
    with connect_sync(settings, "datastorage-cli") as conn:
        infos = partitions.list_partitions(conn)
    print_table(
        ["month", "partition", "attached", "rows (est.)", "size", "indexes ok"],
        [
            (
                p.month.strftime("%Y-%m"),
                p.name,
                "yes" if p.attached else "NO",
                p.rows_estimate,
                _human_bytes(p.size_bytes),
                "yes" if p.indexes_ok else "NO",
            )
            for p in infos
        ],
    )
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.dlq_admin import dlq_command

    return asyncio.run(dlq_command(settings, args.action, print_table))


def cmd_log(settings: Settings, args: argparse.Namespace) -> int:
    from datastorage.log_admin import keygen_command

    return keygen_command(args.origin, args.out)


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    if bool(args.export) == bool(args.checkpoint):
        print(
            "datastorage verify: give --checkpoint FILE (the database) or --export FILE",
            file=sys.stderr,
        )
        return 2
    if args.export:
        from datastorage.ledger.export_verify import verify_export_file

        if len(args.key) != 1:
            print(
                "datastorage verify --export: give the one key the export was signed with",
                file=sys.stderr,
            )
            return 2
        return verify_export_file(args.export, args.key[0])
    from datastorage.log_admin import verify_command

    if args.database:
        settings = settings.replace(database_url=args.database, database_password_file=None)
    return verify_command(settings, args.key, args.checkpoint, args.grace)


def cmd_archive(settings: Settings, args: argparse.Namespace) -> int:
    import datetime as dt

    from datastorage.services.archive import Archive, ArchiveError

    try:
        archive = Archive(settings)
        if args.action == "list":
            print_table(
                ["month", "object"], [(a.month.strftime("%Y-%m"), a.name) for a in archive.list()]
            )
            return 0
        if not args.month:
            print(
                f"datastorage archive {args.action}: MONTH (YYYY-MM) is required", file=sys.stderr
            )
            return 2
        month = dt.datetime.strptime(args.month, "%Y-%m").date()
    except ValueError:
        print(f"datastorage archive: {args.month!r} is not a month (YYYY-MM)", file=sys.stderr)
        return 2
    except ArchiveError as exc:
        print(f"datastorage archive: {exc}", file=sys.stderr)
        return 2
    if args.action == "verify":
        key = args.key
        if key and Path(key).is_file():
            key = Path(key).read_text()
        result = archive.verify(month, key)
        for line in result.lines:
            print(line)
        return result.exit_code
    from datastorage.store.connect import connect_async

    async def restore() -> int:
        async with await connect_async(settings, "datastorage-archive") as conn:
            return await archive.restore(conn, month, settings.partition_lock_timeout)

    try:
        print(f"restored {asyncio.run(restore())} event(s) of {args.month}")
    except ArchiveError as exc:
        print(f"datastorage archive restore: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datastorage", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML settings file (also DATASTORAGE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--server", choices=["hypercorn", "uvicorn"])
    serve.add_argument("--workers", type=int)
    serve.add_argument("--worker-process", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--log-process", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("dev", help="all-in-one local service with its own PostgreSQL").set_defaults(
        func=cmd_dev
    )
    operator = sub.add_parser("operator", help="run the kopf operator (sidecar)")
    operator.add_argument("--namespace", action="append", help="namespace to watch (repeatable)")
    operator.add_argument("--all-namespaces", action="store_true")
    operator.set_defaults(func=cmd_operator)
    parts = sub.add_parser("partitions", help="inspect or maintain audit_events partitions")
    parts.add_argument("action", choices=["status", "ensure"])
    parts.add_argument("--dry-run", action="store_true", help="ensure: only print retirements")
    parts.set_defaults(func=cmd_partitions)
    dlq = sub.add_parser("dlq", help="inspect or drain the DLQ")
    dlq.add_argument("action", choices=["status", "drain"])
    dlq.set_defaults(func=cmd_dlq)
    log = sub.add_parser("log", help="tamper-evident log tools")
    log_sub = log.add_subparsers(dest="action", required=True)
    keygen = log_sub.add_parser("keygen", help="write a new signing key, print its verifier key")
    keygen.add_argument("--origin", required=True, help="the log's name (checkpoint origin)")
    keygen.add_argument("--out", required=True, help="private key file to create (mode 0600)")
    keygen.set_defaults(func=cmd_log)
    verify = sub.add_parser(
        "verify", help="check the audit trail (or an export) against the signed log"
    )
    verify.add_argument(
        "--key",
        required=True,
        action="append",
        help="a pinned verifier key, or a file of it; repeat it for the keys used before a rotation",
    )
    verify.add_argument("--checkpoint", help="a signed checkpoint file: verify the database")
    verify.add_argument("--export", metavar="FILE", help="verify an NDJSON export offline instead")
    verify.add_argument("--database", help="libpq URL (default: DATASTORAGE_DATABASE_URL)")
    verify.add_argument(
        "--grace",
        type=float,
        help="seconds before a row that is no leaf is reported "
        "(default: DATASTORAGE_LOG_UNSEQUENCED_GRACE)",
    )
    verify.set_defaults(func=cmd_verify)
    archive = sub.add_parser("archive", help="list, verify or restore archived months")
    archive.add_argument("action", choices=["list", "verify", "restore"])
    archive.add_argument("month", nargs="?", help="YYYY-MM (verify, restore)")
    archive.add_argument("--key", metavar="VKEY", help="verify: verifier key (default: the log's)")
    archive.set_defaults(func=cmd_archive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(config_file=args.config)
        setup_logging(settings)
        return args.func(settings, args)
    except ConfigError as exc:
        print(f"datastorage: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
