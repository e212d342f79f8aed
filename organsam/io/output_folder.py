"""Output folders that appear whole or not at all, and never destroy data the run did not create.

A result folder is built in a hidden sibling folder (``.organsam-stage-*``) and switched into place with two
renames: the previous result (if any) is renamed aside, the new one renamed to its name, and the old one
removed. Rules:

- The folder is checked before any compute (:func:`check_output_folder`): an existing file, a symbolic-link
  loop, a place that cannot be written, the input itself, a folder that holds the input or lies inside an input
  folder are refused with one line naming the path, the problem and the fix.
- A folder is replaced only when everything in it was written by organsam: every result folder holds a
  ``.organsam-output.json`` listing its files; a folder with anything else in it is refused, never emptied.
- Writers into the same parent folder are serialised by an exclusive ``flock`` on that folder (released by the
  OS when a process dies); staging folders of killed runs are removed, and a previous result left aside by a
  run killed between the two renames is put back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from organsam import __version__
from organsam.io.errors import VolumeWriteError
from organsam.io.files import atomic_write_text

__all__ = ["OUTPUT_MARKER", "OutputFolderError", "check_output_folder", "write_output_folder"]

logger = logging.getLogger(__name__)

#: the file every result folder holds: which files organsam wrote there
OUTPUT_MARKER = ".organsam-output.json"
_STAGE = ".organsam-stage-"
_OLD = ".organsam-old-"


class OutputFolderError(VolumeWriteError):
    """The output folder cannot be used (checked before any compute); the message names the fix."""


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=False)
    except (RuntimeError, OSError) as e:  # symlink loop (RuntimeError before Python 3.13, OSError after)
        raise OutputFolderError(
            path, f"cannot be resolved ({e}); it is probably a symbolic-link loop.", "choose another output folder."
        ) from e


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def foreign_entries(folder: Path) -> list[str]:
    """Files and folders under ``folder`` that organsam's marker does not list (relative POSIX paths)."""
    marker = folder / OUTPUT_MARKER
    listed: set[str] = set()
    if marker.is_file():
        try:
            listed = set(json.loads(marker.read_text()).get("files", []))
        except (OSError, ValueError, AttributeError):
            listed = set()
    foreign: list[str] = []
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        for name in files:
            rel = (rel_root / name).as_posix()
            if rel != OUTPUT_MARKER and rel not in listed:
                foreign.append(rel)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        foreign += [
            (rel_root / d).as_posix()
            for d in os.listdir(root)
            if os.path.islink(os.path.join(root, d)) and (rel_root / d).as_posix() not in listed
        ]
    return sorted(foreign)


def _probe_writable(path: Path) -> None:
    """Create and remove a hidden folder in the nearest existing ancestor of ``path``."""
    anc = path
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    try:
        probe = tempfile.mkdtemp(prefix=_STAGE + "probe-", dir=anc)
    except OSError as e:
        raise OutputFolderError(
            path, f"cannot be written ({e.strerror or e} in {anc}).", "choose a folder you can write to."
        ) from e
    shutil.rmtree(probe, ignore_errors=True)


def check_output_folder(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Check that ``out`` can receive a result, before any compute (under the parent folder's lock, so that a
    result being switched into place by another run is seen whole).

    Args:
        out: the output folder (created when the result is written).
        inputs: the input files or folders of the run (never replaced, never written into).

    Returns:
        ``out`` with ``~`` expanded.

    Raises:
        OutputFolderError: the folder cannot be used; the message says why and what to do.
    """
    out = Path(out).expanduser()
    parent = out.parent
    if not parent.is_dir():
        return _check(out, list(inputs))
    with _parent_lock(parent):
        return _check(out, list(inputs))


def _check(out: Path, inputs: list[str | os.PathLike[str]]) -> Path:
    out = Path(out).expanduser()
    resolved = _resolve(out)
    if out.is_symlink() and not out.exists():
        raise OutputFolderError(out, "is a dangling symbolic link.", "remove it or choose another output folder.")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(
            out, "is an existing file, not a folder.", "give a folder name for the outputs (e.g. -o results/)."
        )
    for inp in inputs:
        try:
            src = _resolve(Path(inp).expanduser())
        except OutputFolderError:
            continue  # an input that cannot be resolved is refused by the reader, with its own message
        if resolved == src:
            raise OutputFolderError(
                out, "is the input itself; organsam never writes over its input.", "choose another output folder."
            )
        if _inside(src, resolved):
            raise OutputFolderError(
                out,
                f"contains the input {inp}; writing the result would replace it.",
                "choose an output folder that does not contain the input.",
            )
        if src.is_dir() and _inside(resolved, src):
            raise OutputFolderError(
                out,
                f"lies inside the input folder {inp}; the outputs would mix with it.",
                "choose an output folder outside the input folder.",
            )
    if out.is_dir():
        foreign = foreign_entries(out)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputFolderError(
                out,
                f"holds files organsam did not write ({foreign[0]}{more}); it is never "
                f"emptied or mixed with other files.",
                "choose a new or empty output folder, or one written by organsam before.",
            )
    _probe_writable(out)
    return out


@contextlib.contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the folder ``parent`` itself (no lock file left behind)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clean_stale(parent: Path) -> None:
    """Under the parent's lock every staging folder there belongs to a run that died: remove it; put back a
    previous result that a run killed between its two renames left aside."""
    for p in parent.iterdir():
        if p.name.startswith(_OLD) and p.is_dir() and p.name.count("-") >= 2:
            target = parent / p.name[len(_OLD) :].rsplit("-", 2)[0]
            if not target.exists():
                logger.warning("%s: restoring the previous result left aside by an interrupted run", target)
                os.replace(p, target)
    for p in parent.iterdir():
        if p.name.startswith((_STAGE, _OLD)) and p.is_dir() and not p.is_symlink():
            logger.info("removing %s, left by an interrupted organsam run", p)
            shutil.rmtree(p, ignore_errors=True)


def write_output_folder(
    out: str | os.PathLike[str], build: Callable[[Path], dict[str, Path]], inputs: Iterable[str | os.PathLike[str]] = ()
) -> dict[str, Path]:
    """Build a result folder beside ``out`` and switch it into place.

    Args:
        out: the output folder; replaced when it holds an earlier organsam result, created otherwise.
        build: writes the result into the (empty) folder it is given; returns name -> path written there.
        inputs: the run's input files or folders (see :func:`check_output_folder`).

    Returns:
        name -> path of what ``build`` wrote, now inside ``out``.

    Raises:
        OutputFolderError: ``out`` cannot be used.
        OSError: writing failed; nothing at ``out`` changed.
    """
    inputs = list(inputs)
    out = Path(out).expanduser()
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(
            parent, f"cannot be created ({e.strerror or e}).", "choose a folder you can write to."
        ) from e
    with _parent_lock(parent):
        _clean_stale(parent)
        _check(out, inputs)
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        stage = parent / f"{_STAGE}{out.name}-{token}"
        stage.mkdir()
        try:
            built = build(stage)
            files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if not p.is_dir())
            atomic_write_text(
                stage / OUTPUT_MARKER, json.dumps({"organsam_version": __version__, "files": files}, indent=1) + "\n"
            )
            old = None
            if out.exists():
                old = parent / f"{_OLD}{out.name}-{token}"
                os.replace(out, old)
            try:
                os.replace(stage, out)
            except OSError as e:
                if old is not None:
                    os.replace(old, out)
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise OutputFolderError(
                        out,
                        "was created by another program while the result was written.",
                        "run again with a new output folder.",
                    ) from e
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
    return {name: out / Path(p).relative_to(stage) for name, p in built.items()}
