"""Load check of ``organsam serve``: N concurrent clients on loopback for a bounded time.

Starts the real server (``python -m organsam.cli.main serve``) in a subprocess with small limits, then runs
``--clients`` threads (default 20) for ``--duration`` seconds. Each client uploads the real AMOS 0013 slab
(NIfTI, 2.4 MB) to open a session, then mixes: slice images and overlays in the three views and windows,
session/health/job polls, prompt parsing (valid and misspelt), segmentation requests (the single model
worker behind a bounded queue), correction points, bad uploads, and deleting its session to start over.
``--patient`` of the clients (default 4) keep their session for the whole run, wait for their result and
then re-run it with the correction points they placed, so that jobs also finish under load.

Checks (exit status 1 when one fails):

- nothing lost: every request got an HTTP answer (no timeout, no dropped connection);
- every answer is expected for its request: success, or a refusal with a clear JSON
  ``{"error": code, "detail": ...}`` and status (409 job active, 413, 415, 422, 429 queue full with
  Retry-After, 503 too many sessions with Retry-After); never a 5xx other than the documented 503;
- memory stable: the server's resident memory in the last quarter of the run is not above the second
  quarter's by more than ``--rss-growth`` (default 25 %) + 100 MB, and the session folders are gone after
  the clients delete their sessions and the server stops.

    .venv/bin/python bench/server_load.py [--clients 20] [--duration 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CT = (
    Path(os.environ.get("ORGANSAM_DATA", str(REPO.parent / "shared" / "data"))) / "amos_0013_slab" / "image.nii.gz"
)
VIEWS = {"axial": 11, "coronal": 512, "sagittal": 512}
WINDOWS = ("auto", "abdomen", "bone", "lung", "raw")
PROMPTS = ("liver", "spleen and left kidney", "liver, aorta")
#: action -> statuses that are a correct answer to it
EXPECTED: dict[str, set[int]] = {
    "upload": {201, 503},
    "bad_upload": {415, 503},  # 503: the session limit is checked before the body is read
    "image": {200},
    "overlay": {200},
    "session": {200},
    "health": {200},
    "parse": {200},
    "parse_bad": {422},
    "segment": {202, 409, 429},
    "job": {200},
    "correction": {201},
    "result": {200, 404},
    "delete": {204},
}
REFUSALS = {409, 413, 415, 422, 429, 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Stats:
    """Thread-safe counters of what the clients saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter[tuple[str, int]] = Counter()
        self.lost: list[str] = []
        self.unexpected: list[str] = []
        self.unclear: list[str] = []
        self.latency: dict[str, list[float]] = {}
        self.jobs: dict[str, str] = {}  # job id -> last state a client saw

    def record(self, action: str, r: httpx.Response | None, dt: float, err: str | None = None) -> None:
        with self.lock:
            if r is None:
                self.lost.append(f"{action}: {err}")
                return
            self.status[(action, r.status_code)] += 1
            self.latency.setdefault(action, []).append(dt)
            if r.status_code not in EXPECTED[action]:
                self.unexpected.append(f"{action}: {r.status_code} {r.text[:200]}")
            if r.status_code >= 400:
                try:
                    body = r.json()
                    clear = isinstance(body.get("error"), str) and isinstance(body.get("detail"), str)
                except ValueError:
                    clear = False
                if r.status_code in (429, 503) and "retry-after" not in r.headers:
                    clear = False
                if not clear:
                    self.unclear.append(f"{action}: {r.status_code} {r.text[:200]}")


class Client(threading.Thread):
    """One simulated user."""

    def __init__(self, n: int, url: str, ct: bytes, deadline: float, stats: Stats, segment_every: int) -> None:
        super().__init__(name=f"client-{n}", daemon=True)
        self.rng = random.Random(n)
        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(180.0, connect=30.0))
        self.ct, self.deadline, self.stats, self.segment_every = ct, deadline, stats, segment_every
        self.sid: str | None = None
        self.fresh = False
        self.delete_p = 0.002
        self.patient = False
        self.job: str | None = None
        self.actions = 0

    def call(self, action: str, method: str, path: str, **kw) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            self.stats.record(action, None, time.perf_counter() - t0, f"{type(e).__name__}: {e}")
            return None
        self.stats.record(action, r, time.perf_counter() - t0)
        return r

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                self.step()
                self.actions += 1
            if self.sid is not None:
                self.call("delete", "DELETE", f"/api/sessions/{self.sid}")
        finally:
            self.http.close()

    def step(self) -> None:
        rng = self.rng
        if self.sid is None:
            r = self.call("upload", "POST", "/api/sessions", files={"file": ("amos_0013.nii.gz", self.ct)})
            if r is not None and r.status_code == 201:
                self.sid = r.json()["id"]
                self.fresh = True  # ask for a segmentation first
            else:
                time.sleep(0.5 + rng.random())
            return
        sid = self.sid
        roll = rng.random()
        view = rng.choice(list(VIEWS))
        index = rng.randrange(VIEWS[view])
        periodic = self.actions % self.segment_every == self.segment_every - 1
        if self.patient and periodic and self.job is not None and self.stats.jobs.get(self.job) != "done":
            periodic = False  # a patient user waits for the result before asking again
        if self.fresh or periodic:
            # a patient user re-runs its prompt (with the corrections it placed) once it has a result
            body = {} if self.patient and not self.fresh else {"prompt": rng.choice(PROMPTS)}
            self.fresh = False
            r = self.call("segment", "POST", f"/api/sessions/{sid}/segment", json=body)
            if r is not None and r.status_code == 202:
                self.job = r.json()["id"]
        elif roll < 0.35:
            self.call(
                "image",
                "GET",
                f"/api/sessions/{sid}/views/{view}/{index}/image.png",
                params={"window": rng.choice(WINDOWS)},
            )
        elif roll < 0.55:
            self.call("overlay", "GET", f"/api/sessions/{sid}/views/{view}/{index}/overlay.png")
        elif roll < 0.62:
            self.call("session", "GET", f"/api/sessions/{sid}")
        elif roll < 0.67:
            self.call("health", "GET", "/api/health")
        elif roll < 0.72:
            self.call("parse", "POST", "/api/parse", json={"text": "liver and both kidneys"})
        elif roll < 0.76:
            self.call("parse_bad", "POST", "/api/parse", json={"text": "livr and kidnys"})
        elif roll < 0.84 and self.job is not None:
            r = self.call("job", "GET", f"/api/jobs/{self.job}")
            if r is not None and r.status_code == 200:
                with self.stats.lock:
                    self.stats.jobs[self.job] = r.json()["state"]
        elif roll < 0.88:
            self.call("result", "GET", f"/api/sessions/{sid}/result")
        elif roll < 0.92:
            self.call(
                "correction",
                "POST",
                f"/api/sessions/{sid}/corrections",
                json={
                    "organ": "liver",
                    "kind": "point",
                    "view": "axial",
                    "index": rng.randrange(11),
                    "x": rng.uniform(0, 511),
                    "y": rng.uniform(0, 511),
                    "label": rng.randint(0, 1),
                },
            )
        elif roll < 0.95:
            self.call("bad_upload", "POST", "/api/sessions", files={"file": ("x.nii.gz", b"not an image" * 100)})
        elif roll < 0.95 + self.delete_p:
            self.call("delete", "DELETE", f"/api/sessions/{sid}")
            self.sid = self.job = None
        else:
            time.sleep(rng.uniform(0.05, 0.3))  # think time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--ct", type=Path, default=DEFAULT_CT, help="the volume clients upload")
    ap.add_argument("--max-sessions", type=int, default=8)
    ap.add_argument("--queue-size", type=int, default=2)
    ap.add_argument("--segment-every", type=int, default=40, help="a client asks for a segmentation every N actions")
    ap.add_argument(
        "--session-actions",
        type=int,
        default=400,
        help="mean number of actions before a client deletes its session",
    )
    ap.add_argument("--patient", type=int, default=4, help="clients that keep their session and wait for their results")
    ap.add_argument("--rss-growth", type=float, default=0.25)
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    if not args.ct.exists():
        print(f"server_load: {args.ct} is missing (set ORGANSAM_DATA or --ct)", file=sys.stderr)
        return 2
    ct = args.ct.read_bytes()
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="organsam-load-"))
    log = work.parent / f"{work.name}.log"
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "organsam.cli.main",
        "serve",
        "--port",
        str(port),
        "--workdir",
        str(work),
        "--max-sessions",
        str(args.max_sessions),
        "--queue-size",
        str(args.queue_size),
        "--session-ttl",
        "120",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO))
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 90:
                print(f"server did not start; log:\n{log.read_text()[-3000:]}", file=sys.stderr)
                return 1

        def sample() -> None:
            while not stop.wait(0.5):
                v = _rss_mb(proc.pid)
                if v is not None:
                    rss.append((time.monotonic(), v))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stats = Stats()
        start = time.monotonic()
        deadline = start + args.duration
        clients = [Client(i, url, ct, deadline, stats, args.segment_every) for i in range(args.clients)]
        for c in clients:
            c.delete_p = 1.0 / max(1, args.session_actions)
        for c in clients[: args.patient]:  # these keep their session for the whole run
            c.delete_p, c.patient = 0.0, True
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=args.duration + 600)
        hung = [c.name for c in clients if c.is_alive()]
        end = time.monotonic()
        time.sleep(2.0)
        health = httpx.get(f"{url}/api/health", timeout=30).json()
        stop.set()
        sampler.join()
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    leftovers = sorted(p.name for p in work.iterdir()) if work.exists() else []
    shutil.rmtree(work, ignore_errors=True)

    span = end - start
    q2 = [v for t, v in rss if start + 0.25 * span <= t < start + 0.5 * span]
    q4 = [v for t, v in rss if start + 0.75 * span <= t <= end]
    rss_q2 = statistics.median(q2) if q2 else float("nan")
    rss_q4 = statistics.median(q4) if q4 else float("nan")
    memory_ok = bool(q2 and q4 and rss_q4 <= rss_q2 * (1 + args.rss_growth) + 100.0)
    by_action: dict[str, dict[str, int]] = {}
    for (action, status), n in sorted(stats.status.items()):
        by_action.setdefault(action, {})[str(status)] = n
    total = sum(stats.status.values())
    summary = {
        "clients": args.clients,
        "duration_s": round(span, 1),
        "requests": total,
        "requests_per_s": round(total / span, 1) if span else 0.0,
        "answered": total,
        "lost": len(stats.lost),
        "unexpected": len(stats.unexpected),
        "unclear_errors": len(stats.unclear),
        "refused": sum(n for (_, s), n in stats.status.items() if s in REFUSALS),
        "server_errors_5xx": sum(n for (_, s), n in stats.status.items() if s >= 500 and s != 503),
        "status_by_action": by_action,
        "latency_p50_ms": {a: round(1000 * statistics.median(v), 1) for a, v in sorted(stats.latency.items())},
        "latency_max_ms": {a: round(1000 * max(v), 1) for a, v in sorted(stats.latency.items())},
        "rss_mb": {
            "start": round(rss[0][1], 1) if rss else None,
            "q2_median": round(rss_q2, 1),
            "q4_median": round(rss_q4, 1),
            "max": round(max(v for _, v in rss), 1) if rss else None,
        },
        "rss_timeline_mb": [[round(t - start), round(v)] for t, v in rss[:: max(1, len(rss) // 24)]],
        "memory_stable": memory_ok,
        "sessions_after_clients_left": health.get("sessions"),
        "session_folders_left_after_stop": leftovers,
        "job_states_seen": dict(Counter(stats.jobs.values())),
        "hung_clients": hung,
        "examples": {
            "lost": stats.lost[:5],
            "unexpected": stats.unexpected[:5],
            "unclear": stats.unclear[:5],
        },
    }
    ok = (
        not stats.lost
        and not stats.unexpected
        and not stats.unclear
        and memory_ok
        and not hung
        and not leftovers
        and health.get("sessions") == 0
    )
    summary["ok"] = ok
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    if not ok:
        print(f"server log: {log}", file=sys.stderr)
    else:
        log.unlink(missing_ok=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
