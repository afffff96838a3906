"""Development commands: the embedded S3 server, the demo, the local Airflow stack, benchmarks."""

from __future__ import annotations

import argparse
import shlex

from pipelines.cli.common import UsageError, config_from_args, embedded_server, emit

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's commands to the ``tierflow`` parser."""
    s3 = sub.add_parser("s3", help="the embedded S3 server (SeaweedFS on 127.0.0.1)")
    s3.add_argument("action", choices=["serve", "stop", "status", "env"])
    s3.set_defaults(func=cmd_s3)

    demo = sub.add_parser("demo", help="run every DAG end to end on the embedded defaults")
    demo.add_argument("--keep-server", action="store_true", help="leave the embedded S3 server running")
    demo.set_defaults(func=cmd_demo)

    af = sub.add_parser("airflow", help="the local Airflow UI (api-server, scheduler, dag-processor, triggerer)")
    af.add_argument("action", choices=["up", "down"])
    af.add_argument("--port", type=int, default=8791, help="api-server port on 127.0.0.1 (default 8791)")
    af.set_defaults(func=cmd_airflow)

    bench = sub.add_parser("bench", help="run benchmarks from benchmarks/ against reference tools")
    bench.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    bench.add_argument("--runs", type=int, default=3, help="runs per measurement; the median is reported")
    bench.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bench.set_defaults(func=cmd_bench)


def cmd_s3(args: argparse.Namespace) -> int:
    """Serve, stop, inspect or export the embedded S3 server."""
    from pipelines.devtools.s3server import S3ServerError

    cfg = config_from_args(args)
    server = embedded_server(cfg)
    assert cfg.s3_server is not None
    try:
        if args.action == "serve":
            was_running = server.pid() is not None
            creds = server.start()
            state = "already running" if was_running else "started"
            print(f"SeaweedFS S3 {state} at {creds.endpoint_url} (pid {server.pid()}, data in {server.root})")
            print(f'buckets: {", ".join(server.buckets) or "-"}; credentials: eval "$(tierflow s3 env)"')
        elif args.action == "stop":
            print("stopped" if server.stop() else "not running")
        elif args.action == "status":
            status = server.status()
            if status["ready"]:
                state = f"running (pid {status['pid']}) and answering"
            elif status["running"]:
                state = f"running (pid {status['pid']}) but not answering: see {status['log']}"
            else:
                state = "not running (start it: tierflow s3 serve)"
            emit(args, status, f"SeaweedFS S3 at {status['endpoint_url']}: {state}; data in {status['root']}")
            return 0 if status["ready"] else 1
        elif args.action == "env":
            if not (server.root / "credentials.json").exists():
                raise UsageError(f"no embedded S3 server has been started under {server.root}: run 'tierflow s3 serve'")
            for key, value in server.credentials().env(cfg.s3_server.conn_id).items():
                print(f"export {key}={shlex.quote(value)}")
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo: embedded S3, synthetic corpus, every DAG end to end, summary."""
    from pipelines.devtools.demo import run_demo
    from pipelines.devtools.s3server import S3ServerError

    try:
        return run_demo(config_from_args(args), keep_server=args.keep_server)
    except S3ServerError as exc:
        raise UsageError(str(exc)) from None


def cmd_airflow(args: argparse.Namespace) -> int:
    """Start or stop the local Airflow UI with the embedded S3 server."""
    from pipelines.devtools import localstack

    cfg = config_from_args(args)
    if args.action == "up":
        return localstack.up(cfg, port=args.port)
    return localstack.down(cfg)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run named benchmarks from benchmarks/."""
    from pipelines.devtools.bench import run_benchmarks

    return run_benchmarks(config_from_args(args), args.names, runs=args.runs, list_only=args.list)
