"""``organsam serve``: the web viewer and JSON API (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web viewer and HTTP API",
        description="Start the organsam web app: a single-page viewer on / and a JSON API "
        "documented on /docs. It has no authentication: keep it on 127.0.0.1 unless "
        "the network is trusted.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="largest upload in MiB (default 512)")
    p.add_argument(
        "--max-unpacked-mb",
        type=float,
        default=2048.0,
        help="largest unpacked size of a zipped DICOM series in MiB (default 2048)",
    )
    p.add_argument("--max-sessions", type=int, default=8, help="sessions kept at once (default 8)")
    p.add_argument(
        "--session-ttl",
        type=float,
        default=1800.0,
        help="seconds an unused session is kept before its files are deleted (default 1800)",
    )
    p.add_argument("--queue-size", type=int, default=8, help="segmentation jobs that may wait (default 8)")
    p.add_argument("--workdir", default=None, help="parent folder for session files (default: system temp)")
    p.add_argument("-d", "--device", default="auto",
                   help="torch device of the model: auto (default: the GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--fast", action="store_true", help="faster, coarser atlas registration for the prior")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests addressed to this host name (repeatable); by default a server on "
                        "127.0.0.1 answers only to localhost, 127.0.0.1 and ::1")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from organsam.cli.main import CLIError

    try:
        import uvicorn

        from organsam.server.app import create_app
    except ModuleNotFoundError as e:
        raise CLIError(
            f"the web app needs the 'serve' extra ({e.name} is missing): pip install 'organsam[serve]'"
        ) from e
    from organsam.server.settings import ServerSettings

    try:
        settings = ServerSettings(
            host=args.host,
            port=args.port,
            max_upload_mb=args.max_upload_mb,
            max_unpacked_mb=args.max_unpacked_mb,
            max_sessions=args.max_sessions,
            session_ttl_s=args.session_ttl,
            queue_size=args.queue_size,
            workdir=args.workdir,
            device=args.device,
            fast_prior=args.fast,
            allowed_hosts=tuple(args.allow_host),
        )
    except ValueError as e:
        raise CLIError(str(e)) from e
    if not settings.is_loopback:
        logger.warning(
            "serving on %s: the app has no authentication; anyone who can reach this address can "
            "upload volumes and run the model",
            settings.host,
        )
    app = create_app(settings)
    logging.getLogger("organsam").setLevel(min(logging.getLogger().level, logging.INFO))
    print(f"organsam viewer on http://{settings.host}:{settings.port}/  (API docs: /docs; Ctrl+C to stop)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0
