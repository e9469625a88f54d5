"""`chatops` — run the bot, run workers, or diagnose a service straight from the terminal.

    chatops run [--no-worker]          Slack (Socket Mode or HTTP) or, with no Slack variables, a terminal chat
    chatops worker [--concurrency N]   queue workers only
    chatops diagnose TARGET [--services FILE] [--format text|json]
    chatops diagnose list              the services and the checks each runs
    chatops postmortem INC-12          print an incident's postmortem draft
    chatops report [--since 30d] [--service S] [--format markdown|json]   incident trends (MTTA/MTTR, pages…)
    chatops fix ACTION key=value … --dry-run|--yes   preview a fix as Slack does; run it where the policy allows
                                                      self-approval

Exit codes: 0 fine; 1 a diagnosis found a `fail` or `error`, a fix was refused or failed, or Redis did not answer
when a server or worker started; 2 usage or configuration error (a fix that needs approval in Slack, or fixes
turned off, included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Coroutine
from pathlib import Path
from typing import Any

from bot.app.processes import (
    hold_collection,
    redis_for,
    run_workers,
    shared_redis_url,
    stop_on_signals,
    warm_up,
)
from bot.settings import ConfigError, Settings, load_settings

log = logging.getLogger("chatops")

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatops", description="Slack incident bot: declare, diagnose, escalate.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot (Socket Mode, HTTP mode, or a terminal chat without Slack)")
    run.add_argument("--no-worker", action="store_true", help="do not run a queue worker in this process")
    run.add_argument("--verbose", action="store_true", help="terminal chat: also show log lines on stderr")
    # How `chatops run` with HTTP_WORKERS > 1 starts its other server processes (bot/app/http_workers.py).
    run.add_argument("--http-child", metavar="PARENT_URL", default=None, help=argparse.SUPPRESS)
    run.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run queue workers")
    worker.add_argument("--concurrency", type=int, default=None, help="jobs at once (default WORKER_CONCURRENCY)")
    diagnose = sub.add_parser("diagnose", help="run a service's checks here and print them")
    diagnose.add_argument("target")
    diagnose.add_argument("--services", type=Path, default=None, help="services file (default SERVICES_FILE)")
    diagnose.add_argument("--format", choices=["text", "json"], default="text")
    postmortem = sub.add_parser("postmortem", help="print the postmortem draft of an incident")
    postmortem.add_argument("incident", help="incident id, e.g. INC-12")
    report = sub.add_parser("report", help="incident trends: MTTA/MTTR per severity, pages, recurring findings")
    report.add_argument("--since", default="30d", help="30d, 90d, 12h, 2w (default 30d)")
    report.add_argument("--service", default=None, help="only this service's incidents")
    report.add_argument("--format", choices=["markdown", "json"], default="markdown")
    fix = sub.add_parser("fix", help="preview a fix (--dry-run) or run one the policy lets you approve (--yes)")
    fix.add_argument("action", help="e.g. lambda.lift_zero_concurrency")
    fix.add_argument("params", nargs="*", metavar="key=value", help="e.g. region=eu-west-1 function=api-handler")
    mode = fix.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="show the calls, before → after, and what is untouched")
    mode.add_argument("--yes", action="store_true", help="run it (only actions under remediation.self_approve)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from bot.logs import setup_logging

    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        if args.command == "diagnose":
            return run_async(diagnose_command(settings, args.target, args.services, args.format))
        if args.command == "run":
            child = None
            if args.http_child:
                from bot.app.http_workers import ChildOptions

                child = ChildOptions(args.http_child, args.parent_pid, args.ready_fd)
            return run_async(run_command(settings, worker=not args.no_worker, child=child, verbose=args.verbose))
        if args.command == "worker":
            return run_async(worker_command(settings, args.concurrency))
        if args.command == "postmortem":
            return run_async(postmortem_command(settings, args.incident))
        if args.command == "report":
            return run_async(report_command(settings, args.since, args.service, args.format))
        if args.command == "fix":
            return run_async(fix_command(settings, args.action, args.params, run=args.yes))
    except ConfigError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except StartError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_USAGE


class StartError(Exception):
    """A server or worker could not start; said in one line."""


async def started(runtime: Awaitable[Any]) -> Any:
    """The runtime a server or worker starts with. Once running, every Redis call retries until Redis answers; the
    start, which reads the key layout first, is the one place Redis being down can stop us: one line saying what
    to do, not redis-py's traceback. A start that fails turns the collector back on (hold_collection() turned it
    off until warm_up(), which this start will not reach)."""
    from redis.exceptions import ConnectionError, TimeoutError

    try:
        return await runtime
    except BaseException as exc:
        gc.enable()
        if isinstance(exc, (ConnectionError, TimeoutError)):
            raise StartError(f"Redis did not answer at start ({exc}); start it, or point REDIS_URL (or "
                             "REDIS_SENTINELS) at a running one") from None
        raise


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (uvicorn[standard] brings it): the ack path is CPU-bound under bursts
    and uvloop's event loop is markedly cheaper per request than the standard one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def diagnose_command(settings: Settings, target: str, services: Path | None, fmt: str) -> int:
    from bot.diagnosis.render.text import diagnosis_json, diagnosis_text
    from bot.settings import load_services
    from checks.model import Status
    from checks.runner import run_service
    from checks.verdict import build_verdict
    from handlers.commands.diagnose import unknown_service_text

    catalog = load_services(services or settings.resolved_services_file())
    if target == "list":
        print(services_text(catalog))
        return EXIT_OK
    if target not in catalog.services:
        from bot.diagnosis.render.text import unescape

        print(f"chatops: {unescape(unknown_service_text(target, list(catalog.services)))}", file=sys.stderr)
        return EXIT_USAGE
    results = await run_service(target, catalog.services[target], deadline_s=settings.diagnose_deadline_s)
    verdict = build_verdict(target, results)
    print(diagnosis_json(verdict, results) if fmt == "json" else diagnosis_text(verdict, results))
    return EXIT_PROBLEM if any(r.status in (Status.fail, Status.error) for r in results) else EXIT_OK


def services_text(catalog: Any) -> str:
    """`chatops diagnose list`: one aligned line a service, as `/diagnose list` answers in Slack."""
    from checks.runner import plan

    rows = [(name, spec.description or "", plan(spec)) for name, spec in sorted(catalog.services.items())]
    name_w, about_w = (max((len(row[i]) for row in rows), default=0) for i in (0, 1))
    return "\n".join(f"{name:<{name_w}}  {about:<{about_w}}  {len(probes)} checks: "
                     f"{', '.join(sorted({p.check for p in probes})) or 'none configured'}"
                     for name, about, probes in rows) or "No services are configured."


async def worker_command(settings: Settings, concurrency: int | None) -> int:
    hold_collection()  # until warm_up()
    from bot.app.features import create_full_runtime

    redis_url = shared_redis_url(settings, "worker")
    stop = stop_on_signals()
    rt = await started(create_full_runtime(settings, redis_url=redis_url))
    warm_up()
    try:
        log.info("worker started (concurrency %d)", concurrency or settings.worker_concurrency)
        tasks = [asyncio.create_task(run_workers(rt, stop, concurrency or settings.worker_concurrency))]
        if settings.worker_metrics_port:
            from bot.app.http_server import create_asgi, serve

            log.info("worker health and metrics on :%d (/healthz, /metrics)", settings.worker_metrics_port)
            tasks.append(asyncio.create_task(serve(create_asgi(None, rt), host=settings.bind_address,
                                                   port=settings.worker_metrics_port, stop=stop)))
        await asyncio.gather(*tasks)
    finally:
        await rt.aclose()
    return EXIT_OK


async def run_command(settings: Settings, *, worker: bool, child: Any = None, verbose: bool = False) -> int:
    if child is not None:
        from bot.app.http_workers import die_with_parent

        die_with_parent(child.parent_pid)
    stop = stop_on_signals()
    if settings.slack_mode == "terminal":
        from bot.app.terminal import run_terminal

        settings.check_terminal_chat()
        return await run_terminal(settings, stop=stop, worker=worker, verbose=verbose)
    hold_collection()  # until warm_up()
    from bot.app.features import create_full_runtime

    async with redis_for(settings) as redis_url:
        rt = await started(create_full_runtime(settings, redis_url=redis_url))
        try:  # a start that stops (a broken services file) still closes the Slack and Redis clients it opened
            rt.services()  # fail fast on a broken services file, before Slack traffic arrives
            warm_up()
            await serve_everything(rt, redis_url, child, worker=worker, stop=stop)
        finally:
            await rt.aclose()
    return EXIT_OK


async def serve_everything(rt: Any, redis_url: str | None, child: Any, *, worker: bool, stop: asyncio.Event) -> None:
    async with http_processes(rt, redis_url, child, worker=worker, stop=stop) as serving:
        tasks = [asyncio.create_task(serve_slack(rt, stop, **serving))]
        if worker:
            tasks.append(asyncio.create_task(run_workers(rt, stop, rt.settings.worker_concurrency)))
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def http_processes(rt: Any, redis_url: str | None, child: Any, *, worker: bool,
                         stop: asyncio.Event) -> AsyncIterator[dict[str, Any]]:
    """How this process serves HTTP, as arguments for `serve_slack`. A child of HTTP_WORKERS hands /healthz and
    /metrics to its parent and says when it listens; a parent with HTTP_WORKERS > 1 starts the children and
    opens the private socket they reach it on (bot/app/http_workers.py); anyone else just serves.

    A parent that runs the queue worker leaves the public port to HTTP_WORKERS children of its own: acks then
    never wait behind the worker's event loop (with a busy worker sharing the loop, an ack burst's p99 moved
    from ~60-75 ms to as much as 99 ms on 2 cores)."""
    settings: Settings = rt.settings
    if child is not None:
        from bot.app.http_workers import parent_routes, signal_ready

        routes, client = parent_routes(child.parent_url)
        try:
            yield {"routes": routes, "on_ready": lambda: signal_ready(child.ready_fd)}
        finally:
            await client.aclose()
        return
    from bot.app.http_workers import HttpChildren, default_process_count

    processes = settings.http_workers or default_process_count()
    if settings.slack_mode != "http" or processes <= 1:
        yield {}
        return
    from bot.app.http_server import listening_socket

    private = listening_socket("127.0.0.1", 0)
    parent_url = f"http://127.0.0.1:{private.getsockname()[1]}"
    count = processes if worker else processes - 1
    # The children inherit the environment, Sentinel settings included; REDIS_URL names a private Redis too.
    redis_env = {"REDIS_URL": redis_url} if redis_url else {}
    children = HttpChildren(count, parent_url, {**os.environ, **redis_env, "HTTP_WORKERS": "1"})
    rt.hooks.health_checks.append(children.problem)
    await children.wait_ready(stop)
    if worker:
        log.info("HTTP mode: %d server processes answer on port %d; this one runs the worker", count, settings.port)
    else:
        log.info("HTTP mode: %d more server processes share port %d", count, settings.port)
    try:
        yield {"extra_sockets": [private], "public": not worker}
    finally:
        await children.stop()


async def serve_slack(rt: object, stop: asyncio.Event, *, routes: dict | None = None,
                      extra_sockets: list | None = None, on_ready: Any = None, public: bool = True) -> None:
    from bot.app.bolt import create_app
    from bot.app.http_server import create_asgi, serve

    settings: Settings = rt.settings  # type: ignore[attr-defined]
    app = create_app(rt)  # type: ignore[arg-type]
    if settings.slack_mode == "socket":
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())  # type: ignore[union-attr]
        await handler.connect_async()
        log.info("connected to Slack in Socket Mode")
        await stop.wait()
        await handler.close_async()
        return
    if public:
        log.info("HTTP mode: listening on %s:%d (POST /slack/events, GET /healthz)", settings.bind_address,
                 settings.port)
    await serve(create_asgi(app, rt, routes), host=settings.bind_address, port=settings.port if public else None,
                stop=stop, extra_sockets=extra_sockets or (), on_ready=on_ready)  # type: ignore[arg-type]


async def postmortem_command(settings: Settings, incident: str) -> int:
    from bot.app.features import create_full_runtime
    from bot.writeup.postmortem.assemble import PostmortemError, postmortem_markdown

    # Reading a draft pages nobody: the paging policy's start-up warnings would only bury the answer.
    logging.getLogger("bot.paging").setLevel(logging.ERROR)
    rt = await create_full_runtime(settings, redis_url=shared_redis_url(settings, "postmortem"))
    try:
        print(await postmortem_markdown(rt, incident))
    except PostmortemError as exc:  # no such incident, or a template that does not render: a usage error
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        await rt.aclose()
    return EXIT_OK


async def report_command(settings: Settings, since: str, service: str | None, fmt: str) -> int:
    from bot.app.features import create_full_runtime
    from bot.writeup.report import build_report, markdown, parse_since

    try:
        since_s = parse_since(since)
    except ValueError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.getLogger("bot.paging").setLevel(logging.ERROR)  # reading records pages nobody
    rt = await create_full_runtime(settings, redis_url=shared_redis_url(settings, "report"))
    try:
        report = await build_report(rt, since_s=since_s, service=service)
    finally:
        await rt.aclose()
    print(report.to_json() if fmt == "json" else markdown(report), end="" if fmt != "json" else "\n")
    return EXIT_OK


async def fix_command(settings: Settings, action: str, pairs: list[str], *, run: bool) -> int:
    from bot.errors import UserError
    from bot.incidents.config import load_incident_settings
    from bot.paging.policy import load_policy
    from bot.remediation.service import DISABLED
    from bot.remediation.shell import action_named, fix_from_shell, may_run_here, parse_params, split_incident
    from checks.aws.clients import AwsClients
    from checks.aws.fixes import fix_actions

    if not settings.remediation_enabled:
        print(f"chatops: {DISABLED}", file=sys.stderr)
        return EXIT_USAGE
    logging.getLogger("bot.paging").setLevel(logging.ERROR)  # only its `remediation:` part matters here
    policy = load_policy(load_incident_settings().paging_policy_file).remediation
    try:
        params, incident = split_incident(parse_params(pairs))
        if not run:
            outcome = await fix_from_shell(fix_actions(), AwsClients(), policy, action, params, run=None)
        else:
            action_named(fix_actions(), action)  # refusals need no Redis: say them before connecting
            may_run_here(policy, action)
            outcome = await _fix_recorded(settings, policy, action, params, incident)
    except UserError as exc:
        print(f"chatops: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(outcome.text)
    return EXIT_OK if outcome.ok else EXIT_PROBLEM


async def _fix_recorded(settings: Settings, policy: Any, action: str, params: dict[str, str], incident_id: str) -> Any:
    """`--yes`: through the request path, so the fix has a request record and audit lines (and a timeline entry
    when `incident=` names one) like a fix approved in Slack. Needs the bot's Redis, as `chatops postmortem` does."""
    from bot.app.features import create_full_runtime
    from bot.errors import UserError
    from bot.incidents.service import incidents_of
    from bot.remediation import service
    from bot.remediation.shell import Outcome, fix_from_shell, recheck_text, shell_label

    rt = await create_full_runtime(settings, redis_url=shared_redis_url(settings, "fix --yes"))
    try:
        fx = service.remediation_of(rt)
        incident = await incidents_of(rt).store.get(incident_id) if incident_id else None
        if incident_id and incident is None:
            raise UserError(f"There is no incident {incident_id}; leave incident= out or name one that exists.")
        recorded: list[Any] = []

        async def run(plan: Any) -> Any:
            request = await service.run_from_shell(fx, plan, shell_label(action, params), shell_user(), incident)
            recorded.append(request)
            return request.fix_result()

        outcome = await fix_from_shell(fx.actions, rt.aws, policy, action, params, run=run)
    finally:
        await rt.aclose()
    if not recorded:
        return outcome
    service_name = (incident.service or "") if incident else ""
    return Outcome(outcome.ok, f"{outcome.text}\n{recheck_text(recorded[0].id, incident_id, service_name)}")


def shell_user() -> str:
    """Who ran `chatops fix --yes`, as the record and the timeline name them (not a Slack id: shown as text)."""
    import getpass

    try:
        return f"{getpass.getuser()} (chatops fix)"
    except (KeyError, OSError):  # no login name in this container
        return "chatops fix"
