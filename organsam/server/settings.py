"""Limits and options of the ``organsam serve`` web app."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerSettings"]


@dataclass
class ServerSettings:
    """Everything configurable about the server (the CLI flags of ``organsam serve`` map onto these).

    Attributes:
        host: interface to bind; loopback by default (the app has no authentication).
        allowed_hosts: Host header names accepted besides localhost/127.0.0.1/::1 (a loopback-bound server
            refuses any other name, against DNS rebinding; on another interface the check applies only when
            names are given here).
        port: TCP port.
        max_upload_mb: largest accepted upload (request body), in MiB; larger ones get HTTP 413.
        max_unpacked_mb: largest size an upload may unpack to (the files of a DICOM zip, a .nii.gz, an npz), in MiB.
        max_dicom_files: most files accepted inside a DICOM zip.
        max_sessions: most sessions alive at once; a new upload beyond that gets HTTP 503.
        session_ttl_s: a session unused for this long is deleted with its files.
        reap_interval_s: how often expired sessions are looked for.
        queue_size: most segmentation jobs waiting for the model; more get HTTP 429.
        max_concurrent_loads: uploads decoded at the same time (the rest wait their turn).
        render_threads: slice/overlay images rendered at the same time (the rest wait their turn); default
            half the CPU cores, so that many viewers cannot starve the model of CPU.
        workdir: parent folder of the session folders (default: the system temp folder).
        device: torch device of the model.
        fast_prior: faster, coarser atlas registration for the location prior.
        encode_chunk: slices encoded per step while reporting progress.
    """

    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    port: int = 8000
    max_upload_mb: float = 512.0
    max_unpacked_mb: float = 2048.0
    max_dicom_files: int = 4000
    max_sessions: int = 8
    session_ttl_s: float = 1800.0
    reap_interval_s: float = 30.0
    queue_size: int = 8
    max_concurrent_loads: int = 1
    render_threads: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))
    workdir: Path | None = None
    device: str = "auto"
    fast_prior: bool = False
    encode_chunk: int = 2

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.max_unpacked_mb <= 0:
            raise ValueError(
                f"upload limits must be positive, got max_upload_mb={self.max_upload_mb}, "
                f"max_unpacked_mb={self.max_unpacked_mb}"
            )
        for name in (
            "max_sessions",
            "queue_size",
            "max_concurrent_loads",
            "max_dicom_files",
            "encode_chunk",
            "render_threads",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.session_ttl_s <= 0 or self.reap_interval_s <= 0:
            raise ValueError("session_ttl_s and reap_interval_s must be positive")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.workdir is not None:
            self.workdir = Path(self.workdir)

    @property
    def max_upload_bytes(self) -> int:
        """Upload cap in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_unpacked_bytes(self) -> int:
        """Cap on the unpacked size of a DICOM zip in bytes."""
        return int(self.max_unpacked_mb * 1024 * 1024)

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
