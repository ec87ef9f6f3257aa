"""The commands that run once and print: migrate, schedule, status, runs, prune, embedded."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import psycopg

from pgxjob import embedded, migrations, queries
from pgxjob.cli.common import (
    EXIT_OK,
    CommandError,
    UsageError,
    connect,
    migrated,
    note,
    resolve,
    schema_of,
)
from pgxjob.cli.output import (
    age,
    count,
    display_path,
    duration_text,
    json_default,
    local_time,
    one_line,
    table,
)
from pgxjob.cli.parsing import params_json, parse_run_at
from pgxjob.errors import PgxjobError


def cmd_migrate(args: argparse.Namespace) -> int:
    db = resolve(args)
    latest = migrations.latest_version()
    schema = schema_of(args)
    with connect(db, schema) as conn:
        current = migrations.current_version(conn, schema)
        if args.check:
            if current == latest:
                print(f"pgxjob schema is up to date (version {latest}) in {db.describe()}")
                return EXIT_OK
            raise CommandError(
                f"pgxjob schema is at version {current or 'none'}, this pgxjob needs {latest}"
                f" (database {db.describe()}); run `pgxjob migrate`"
            )
        try:
            applied = migrations.migrate(conn, schema=schema)
        except PgxjobError as exc:
            raise CommandError(f"{exc} (database {db.describe()})") from exc
    if applied:
        versions = ", ".join(str(v) for v in applied)
        print(f"applied pgxjob migrations {versions}; schema version {latest} in {db.describe()}")
    else:
        print(f"pgxjob schema is up to date (version {latest}) in {db.describe()}")
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    params = params_json(args.params)
    run_at: dt.datetime | None = None
    run_in: dt.timedelta | None = None
    if args.run_at is not None:
        try:
            run_at, run_in = parse_run_at(args.run_at)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    db = resolve(args)
    with migrated(db, schema_of(args)) as conn:
        try:
            job_id = queries.schedule_relative(
                conn,
                args.job_type,
                params,
                args.group,
                run_at,
                run_in,
                priority=args.priority,
                unique_key=args.unique_key,
            )
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
        except (
            psycopg.errors.InvalidTextRepresentation,
            psycopg.errors.StatementTooComplex,
        ) as exc:
            # Only PARAMS_JSON is cast here; PostgreSQL refused it (bad or too deeply nested).
            reason = (exc.diag.message_primary or str(exc)).strip()
            raise UsageError(f"PARAMS_JSON is not usable JSON: {reason}") from None
    print(job_id)
    note(args, f"scheduled {args.job_type} job {job_id} in {db.describe()}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    db = resolve(args)
    with migrated(db, schema_of(args)) as conn:
        doc = queries.status(conn, args.failures)
    if args.json:
        doc = {"database": embedded.redact(db.conninfo), "database_source": db.source, **doc}
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    out = sys.stdout
    out.write(
        f"database  {db.describe()}\n"
        f"schema    version {doc['schema_version']}\n"
        f"clock     {local_time(doc['now'])}\n\n"
    )
    jobs = doc["jobs"]
    if jobs:
        totals = {k: sum(j[k] for j in jobs) for k in ("due", "scheduled", "retrying", "locked")}
        rows = [
            [
                j["group_name"],
                j["job_type"],
                count(j["due"]),
                count(j["scheduled"]),
                count(j["retrying"]),
                count(j["locked"]),
                age(j["lag_seconds"]),
            ]
            for j in jobs
        ]
        rows.append(["total", "", *(count(totals[k]) for k in totals), ""])
        out.write("JOBS\n")
        table(
            out,
            ["group", "type", "due", "scheduled", "retrying", "locked", "lag"],
            rows,
            right={2, 3, 4, 5, 6},
        )
    else:
        out.write("JOBS\n  no job types registered and no jobs\n")
    out.write("\nWORKERS\n")
    workers = doc["workers"]
    if workers:
        table(
            out,
            ["id", "group", "state", "heartbeat", "locked", "started"],
            [
                [
                    str(w["worker_id"]),
                    w["group_name"],
                    "alive" if w["alive"] else "dead",
                    f"{age(w['heartbeat_age_seconds'])} ago",
                    count(w["locked_jobs"]),
                    local_time(w["inserted_at"]),
                ]
                for w in workers
            ],
            right={0, 3, 4},
        )
    else:
        out.write("  no workers registered\n")
    if args.failures:
        out.write("\nRECENT FAILURES\n")
        failures = doc["recent_failures"]
        if failures:
            table(
                out,
                ["finished", "job", "run", "group", "type", "error"],
                [
                    [
                        local_time(f["finished_at"]),
                        str(f["job_id"]),
                        str(f["run_number"]),
                        f["group_name"],
                        f["job_type"],
                        one_line(f["error"], 80),
                    ]
                    for f in failures
                ],
                right={1, 2},
            )
        else:
            out.write("  none\n")
    return EXIT_OK


def _run_detail(run: queries.JobRun, limit: int) -> str:
    if run.error is not None:
        return f"error: {one_line(run.error, limit)}"
    if run.output is not None:
        return f"output: {one_line(run.output, limit)}"
    return ""


def cmd_periodic(args: argparse.Namespace) -> int:
    if args.action == "remove" and not args.name:
        raise UsageError("periodic remove needs the NAME of the schedule to remove")
    if args.action == "list" and args.name:
        raise UsageError("periodic list takes no NAME")
    db = resolve(args)
    with migrated(db, schema_of(args)) as conn:
        if args.action == "remove":
            if not queries.unschedule_periodic(conn, args.name):
                raise CommandError(f"no periodic job named {args.name!r} in {db.describe()}")
            note(args, f"removed periodic job {args.name!r} from {db.describe()}")
            return EXIT_OK
        schedules = queries.periodic_job_status(conn)
    if args.json:
        for schedule in schedules:
            print(json.dumps(schedule._asdict(), default=json_default))
        return EXIT_OK
    if not schedules:
        note(args, f"no periodic jobs in {db.describe()}")
        return EXIT_OK
    table(
        sys.stdout,
        ["name", "cron", "zone", "type", "group", "next fire", "last fired", "last job"],
        [
            [
                p.name,
                p.cron,
                p.time_zone,
                p.job_type or "-",
                p.group_name,
                local_time(p.next_fire_at),
                local_time(p.last_fired_at) if p.last_fired_at else "-",
                str(p.last_job_id) if p.last_job_id is not None else "-",
            ]
            for p in schedules
        ],
        right={7},
    )
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    db = resolve(args)
    outcomes: list[tuple[int, str]] = []
    with migrated(db, schema_of(args)) as conn:
        for job_id in args.job_ids:
            outcomes.append((job_id, queries.cancel_job(conn, job_id)))
    for job_id, outcome in outcomes:
        if args.json:
            print(json.dumps({"job_id": job_id, "outcome": outcome}))
        else:
            print(f"{job_id}\t{outcome}")
    missing = [job_id for job_id, outcome in outcomes if outcome == "not_found"]
    if missing:
        note(args, f"not found (unknown or already finished): {', '.join(map(str, missing))}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    db = resolve(args)
    with migrated(db, schema_of(args)) as conn:
        try:
            runs = queries.recent_job_runs(
                conn,
                args.limit,
                failed_only=args.failed,
                job_type=args.job_type,
                group_name=args.group,
                job_id=args.job_id,
            )
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
    if args.json:
        for run in runs:
            record = run._asdict()
            record["params"] = None if run.params is None else json.loads(run.params)
            record["output"] = None if run.output is None else json.loads(run.output)
            print(json.dumps(record, default=json_default))
        return EXIT_OK
    if not runs:
        note(args, f"no runs match in {db.describe()}")
        return EXIT_OK
    table(
        sys.stdout,
        ["finished", "job", "run", "group", "type", "duration", "outcome", "detail"],
        [
            [
                local_time(run.finished_at),
                str(run.job_id),
                str(run.run_number),
                run.group_name,
                run.job_type,
                duration_text(run.finished_at - run.started_at),
                run.outcome or ("succeeded" if run.error is None else "failed"),
                _run_detail(run, 60 if args.job_id is None else 2000),
            ]
            for run in runs
        ],
        right={1, 2, 5},
    )
    note(args, f"{len(runs)} runs from {db.describe()}")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    db = resolve(args)
    with migrated(db, schema_of(args)) as conn:
        try:
            deleted = queries.prune_job_runs(conn, args.older_than)
        except PgxjobError as exc:
            raise CommandError(str(exc)) from exc
    print(
        f"deleted {deleted} runs that finished more than {duration_text(args.older_than)} ago"
        f" from {db.describe()}"
    )
    return EXIT_OK


def cmd_embedded(args: argparse.Namespace) -> int:
    path = embedded.data_dir()
    where = display_path(path)
    try:
        if args.action == "start":
            running = embedded.is_running(path)
            url = embedded.start(path)
            print(url)
            note(args, f"embedded PostgreSQL in {where} {'runs' if running else 'started'}")
        elif args.action == "stop":
            if embedded.stop(path):
                print(f"stopped the embedded PostgreSQL in {where}")
            else:
                print(f"the embedded PostgreSQL in {where} is not running")
        elif args.action == "status":
            if embedded.is_running(path):
                print(f"running in {where}: {embedded.embedded_url(path)}")
            else:
                print(f"not running (data directory {where})")
                return 3
        else:
            url_or_none = embedded.embedded_url(path)
            if url_or_none is None:
                raise CommandError(
                    f"the embedded PostgreSQL in {where} is not running; "
                    "start it with `pgxjob embedded start`"
                )
            print(url_or_none)
    except embedded.EmbeddedUnavailableError as exc:
        raise CommandError(str(exc)) from exc
    return EXIT_OK
