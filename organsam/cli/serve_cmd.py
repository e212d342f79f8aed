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
        "described on /openapi.json. It has no authentication: keep it on 127.0.0.1 unless "
        "the network is trusted.",
    )
    from organsam.server.settings import ServerSettings

    d = ServerSettings()  # the one place the defaults live
    p.add_argument("--host", default=d.host, help=f"interface to bind (default {d.host}: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"TCP port (default {d.port})")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_mb,
        help=f"largest upload in MiB (default {d.max_upload_mb:g})",
    )
    p.add_argument(
        "--max-unpacked-mb",
        type=float,
        default=d.max_unpacked_mb,
        help=f"largest unpacked size of an upload (zipped DICOM, .nii.gz, npz) in MiB (default {d.max_unpacked_mb:g})",
    )
    p.add_argument(
        "--max-sessions", type=int, default=d.max_sessions, help=f"sessions kept at once (default {d.max_sessions})"
    )
    p.add_argument(
        "--session-ttl",
        type=float,
        default=d.session_ttl_s,
        help=f"seconds an unused session is kept before its files are deleted (default {d.session_ttl_s:g})",
    )
    p.add_argument(
        "--queue-size", type=int, default=d.queue_size, help=f"segmentation jobs that may wait (default {d.queue_size})"
    )
    p.add_argument("--workdir", default=None, help="parent folder for session files (default: system temp)")
    p.add_argument(
        "-d",
        "--device",
        default=d.device,
        help="torch device of the model: auto (default: the GPU when there is one), cpu, cuda or cuda:N",
    )
    p.add_argument("--fast", action="store_true", help="faster, coarser atlas registration for the prior")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (repeatable); by default a server on "
        "127.0.0.1 answers only to localhost, 127.0.0.1 and ::1",
    )
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
