"""``organsam serve`` JSON API with FastAPI's test client on real CT data.

One real segmentation (AMOS 0013 slab, "liver and both kidneys") is shared by the module; a re-run with a
box correction checks that the session's slice embeddings are reused and the correction is applied.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import data_path
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the 'serve' extra (fastapi)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx (dev extra)")

from fastapi.testclient import TestClient  # noqa: E402

from organsam.io import load_labels, load_volume  # noqa: E402
from organsam.server import ServerSettings, create_app  # noqa: E402

PROMPT = "liver and both kidneys"
AMOS = ("amos_0013_slab", "image.nii.gz")


def _wait(client: TestClient, job_id: str, timeout: float = 600.0) -> dict:
    t0 = time.monotonic()
    seen_progress = []
    while time.monotonic() - t0 < timeout:
        r = client.get(f"/api/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        seen_progress.append(job["progress"])
        if job["state"] not in ("queued", "running"):
            job["seen_progress"] = seen_progress
            return job
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def _upload(client: TestClient, path: Path, name: str | None = None, **form: str):
    with open(path, "rb") as f:
        return client.post("/api/sessions", files={"file": (name or path.name, f)}, data=form or None)


def _json_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory):
    settings = ServerSettings(
        max_upload_mb=8,
        max_sessions=4,
        queue_size=1,
        session_ttl_s=900,
        workdir=tmp_path_factory.mktemp("serve"),
    )
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as client:
        yield app, client
    assert not app.state.store.root.exists(), "session folders must be removed at shutdown"


@pytest.fixture(scope="module")
def segmented(app_client):
    """The module's one real segmentation: AMOS 0013 slab uploaded under a hostile name."""
    app, client = app_client
    r = _upload(client, data_path(*AMOS), name="../../etc/amos 0013;rm -rf.nii.gz")
    assert r.status_code == 201, r.text
    session = r.json()
    r = client.post(f"/api/sessions/{session['id']}/segment", json={"prompt": PROMPT})
    assert r.status_code == 202, r.text
    t0 = time.monotonic()
    job = _wait(client, r.json()["id"])
    job["wall_s"] = time.monotonic() - t0
    assert job["state"] == "done", job
    result = client.get(f"/api/sessions/{session['id']}/result").json()
    return session, job, result


# ---------------------------------------------------------------------------------------------- viewer / docs
def test_viewer_page_is_served_locally(app_client) -> None:
    _, client = app_client
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp  # the browser may load nothing external
    html = r.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "/static/app.js" in refs and "/static/style.css" in refs
    assert all(not ref.startswith(("http:", "https:", "//")) for ref in refs), refs
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and kind in s.headers["content-type"]
        assert "http://" not in s.text and "https://" not in s.text
    for bad in ("/static/..%2Fapp.py", "/static/index.html", "/static/%2Fetc%2Fpasswd"):
        assert client.get(bad).status_code == 404
    for element in (
        'id="file"',
        'id="prompt"',
        'id="window"',
        'id="opacity"',
        'id="organ-table"',
        'id="legend"',
        'id="canvas-axial"',
        'id="canvas-coronal"',
        'id="canvas-sagittal"',
        'id="dl-masks"',
    ):
        assert element in html


def test_openapi_documents_the_json_api(app_client) -> None:
    _, client = app_client
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/api/sessions",
        "/api/sessions/{sid}",
        "/api/sessions/{sid}/segment",
        "/api/jobs/{job_id}",
        "/api/sessions/{sid}/result",
        "/api/sessions/{sid}/corrections",
        "/api/parse",
        "/api/sessions/{sid}/views/{view}/{index}/image.png",
        "/api/sessions/{sid}/download/{what}",
    ):
        assert p in paths, p
    assert "multipart/form-data" in paths["/api/sessions"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_health_and_vocabulary(app_client) -> None:
    _, client = app_client
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["max_sessions"] == 4
    organs = {o["id"] for o in client.get("/api/organs").json()}
    assert {"liver", "kidney_left", "pancreas"} <= organs
    r = client.post("/api/parse", json={"text": "liver and both kidneys"})
    assert [o["id"] for o in r.json()["organs"]] == ["liver", "kidney_right", "kidney_left"]
    body = _json_error(client.post("/api/parse", json={"text": "livr, spleen"}), 422, "unknown_organ")
    assert "liver" in body["suggestions"] and body["term"] == "livr"


# ---------------------------------------------------------------------------------------------- bad input
def test_upload_type_is_checked_by_content(app_client, tmp_path: Path) -> None:
    app, client = app_client
    root = str(app.state.store.root)
    before = len(app.state.store)
    txt = tmp_path / "notes.nii.gz"
    txt.write_text("this is not an image\n" * 50)
    body = _json_error(_upload(client, txt), 415, "unsupported_type")
    assert "content" in body["detail"]
    png = tmp_path / "scan.nii"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    _json_error(_upload(client, png), 415, "unsupported_type")
    one = tmp_path / "slice.nii.gz"
    one.write_bytes(data_path("dcmqi_ct3slice", "ct-3slice", "01.dcm").read_bytes())
    assert "zip" in _json_error(_upload(client, one), 415, "unsupported_type")["detail"]
    src = data_path(*AMOS).read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(src[: len(src) // 3])
    r = _upload(client, cut)
    assert r.status_code in (400, 422), r.text
    assert root not in r.text and "/tmp/" not in r.json()["detail"]  # no server path leaks out
    nozip = tmp_path / "x.zip"
    with zipfile.ZipFile(nozip, "w") as zf:
        zf.writestr("readme.txt", "no dicom here")
    _json_error(_upload(client, nozip), 415, "unsupported_type")
    _json_error(_upload(client, data_path(*AMOS), modality="ultrasound"), 422, "bad_modality")
    assert len(app.state.store) == before  # refused uploads leave no session behind
    assert sorted(p.name for p in app.state.store.root.iterdir()) == sorted(
        s for s in app.state.store._sessions
    )  # and no folder


def test_upload_size_cap(app_client) -> None:
    _, client = app_client
    big = np.random.default_rng(0).bytes(9 * 2**20)  # over the 8 MiB cap of this app
    body = _json_error(client.post("/api/sessions", files={"file": ("big.nii.gz", big)}), 413, "too_large")
    assert "8 MiB" in body["detail"]

    boundary = "organsamtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.nii.gz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def chunks():  # no Content-Length (chunked): the cap is enforced while the body streams in
        yield head
        for i in range(0, len(big), 2**20):
            yield big[i : i + 2**20]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/api/sessions",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    _json_error(r, 413, "too_large")
    _json_error(
        client.post(
            "/api/parse",
            content=b"{" + b" " * (2 * 2**20) + b"}",
            headers={"content-type": "application/json"},
        ),
        413,
        "too_large",
    )


def test_uploads_that_unpack_too_big_or_cannot_be_segmented_are_refused(app_client, tmp_path: Path) -> None:
    """A .nii.gz of zeros that unpacks past the cap (a gzip bomb) gets 413 before it is read; a 3-slice volume,
    which text prompts cannot be placed on, is refused at upload with 422 instead of failing later as an
    internal error."""
    settings = ServerSettings(max_unpacked_mb=16, workdir=tmp_path / "w")
    zeros = tmp_path / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((256, 256, 256), np.int16), np.eye(4)), str(zeros))  # 32 MiB unpacked
    assert zeros.stat().st_size < 2**20
    with TestClient(create_app(settings), base_url="http://localhost") as small:
        body = _json_error(_upload(small, zeros), 413, "too_large")
        assert "unpacks" in body["detail"] and "16 MiB" in body["detail"]
    _, client = app_client
    thin = tmp_path / "three_slices.nii.gz"
    nib.save(nib.load(str(data_path(*AMOS))).slicer[:, :, 4:7], str(thin))
    body = _json_error(_upload(client, thin), 422, "unreadable_volume")
    assert "3 slice" in body["detail"] and str(tmp_path) not in body["detail"]


def test_requests_for_another_host_name_are_refused(app_client) -> None:
    """DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends Host: evil.example."""
    _, client = app_client
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    body = _json_error(client.get("/api/health", headers={"host": "evil.example:8000"}), 400, "bad_host")
    assert "localhost" in body["detail"]


def test_voxel_readout_and_free_window_level(app_client) -> None:
    """The viewer's readout: the stored HU at a voxel with the input file's own (i, j, k); and any level/width."""
    _, client = app_client
    sid = _upload(client, data_path(*AMOS)).json()["id"]
    s = client.get(f"/api/sessions/{sid}").json()
    assert s["window_levels"]["abdomen"] == [40.0, 400.0] and s["window_levels"]["raw"][1] > 0
    assert s["views"]["axial"]["file_axis"] == "k" and not s["views"]["axial"]["file_reversed"]
    p = client.get(f"/api/sessions/{sid}/voxel", params={"z": 5, "y": 200, "x": 150}).json()
    hu = np.asarray(nib.load(str(data_path(*AMOS))).dataobj)
    assert p["unit"] == "HU" and p["organs"] == [] and p["value"] == pytest.approx(hu[tuple(p["ijk"])], abs=0.1)
    _json_error(client.get(f"/api/sessions/{sid}/voxel", params={"z": 99, "y": 0, "x": 0}), 422, "bad_voxel")
    narrow = client.get(f"/api/sessions/{sid}/views/axial/5/image.png", params={"window": "1000,100"})
    wide = client.get(f"/api/sessions/{sid}/views/axial/5/image.png", params={"window": "40,400"})
    assert narrow.status_code == wide.status_code == 200
    dark = np.asarray(Image.open(io.BytesIO(narrow.content))).mean()
    assert dark < np.asarray(Image.open(io.BytesIO(wide.content))).mean() / 3  # soft tissue below a bone level
    _json_error(
        client.get(f"/api/sessions/{sid}/views/axial/5/image.png", params={"window": "40,0"}), 422, "bad_window"
    )
    assert client.delete(f"/api/sessions/{sid}").status_code == 204


def test_json_errors_for_bad_requests(app_client) -> None:
    _, client = app_client
    _json_error(client.get("/api/sessions/not-a-session-id"), 422, "invalid_request")
    _json_error(client.get("/api/sessions/" + "0" * 32), 404, "no_such_session")
    _json_error(client.get("/api/jobs/" + "f" * 32), 404, "no_such_job")
    _json_error(client.get("/api/nothing-here"), 404, "not_found")
    _json_error(
        client.post("/api/parse", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "invalid_request",
    )
    _json_error(client.post("/api/parse", json={"txt": "liver"}), 422, "invalid_request")


def test_zipped_dicom_with_hostile_member_names(app_client, tmp_path: Path) -> None:
    app, client = app_client
    series = sorted(data_path("ts_b_dicom", "dicom").iterdir())[:4]  # 4 slices: the fewest text can be placed on
    evil = ["../../../evil_a.dcm", "/tmp/evil_b.dcm", "..\\..\\evil_c.dcm", "sub/../../evil_d.dcm"]
    z = tmp_path / "series.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name, f in zip(evil, series):
            zf.writestr(name, f.read_bytes())
        zf.writestr("__MACOSX/._junk", b"mac resource fork")
        zf.writestr("notes.txt", b"not a dicom file")
    r = _upload(client, z)
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["kind"] == "dicom_zip" and s["shape_zyx"] == [4, 512, 512] and s["modality"] == "CT"
    sdir = app.state.store.root / s["id"]
    assert sorted(p.name for p in (sdir / "dicom").iterdir()) == ["00000.dcm", "00001.dcm", "00002.dcm", "00003.dcm"]
    for base in (sdir / "dicom", sdir, app.state.store.root, app.state.store.root.parent):
        for name in ("evil_a.dcm", "evil_b.dcm", "evil_c.dcm", "evil_d.dcm"):
            assert not (base / name).exists()
    assert not Path("/tmp/evil_b.dcm").exists()
    assert client.delete(f"/api/sessions/{s['id']}").status_code == 204
    assert not sdir.exists()
    _json_error(client.get(f"/api/sessions/{s['id']}"), 404, "no_such_session")


def test_zip_padding_is_not_unpacked(app_client) -> None:
    """A 1 MB zip carrying 200 MiB of zeros beside its DICOM slices (named like a slice): only the slices are
    written to disk (the padding once held the request for 80 s)."""
    app, client = app_client
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(data_path("ts_b_dicom", "dicom").iterdir())[:4]:
            zf.writestr(f.name, f.read_bytes())
        zf.writestr("IM9999.dcm", b"\0" * (200 << 20))
    assert len(buf.getvalue()) < 2 << 20
    r = client.post("/api/sessions", files={"file": ("padded.zip", buf.getvalue())})
    assert r.status_code == 201, r.text
    sdir = app.state.store.root / r.json()["id"]
    assert len(list((sdir / "dicom").iterdir())) == 4 and r.json()["shape_zyx"][0] == 4
    assert client.delete(f"/api/sessions/{r.json()['id']}").status_code == 204


def test_npz_upload(app_client, tmp_path: Path) -> None:
    _, client = app_client
    vol = load_volume(data_path(*AMOS))
    f = tmp_path / "case.npz"
    np.savez_compressed(f, imgs=vol.array[3:7].astype(np.int16), spacing=np.array(vol.spacing[::-1]))
    r = _upload(client, f, name="case.npz")
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["kind"] == "npz" and s["shape_zyx"] == [4, 512, 512]
    assert s["spacing_zyx_mm"] == pytest.approx(list(vol.spacing), rel=1e-4)
    assert client.delete(f"/api/sessions/{s['id']}").status_code == 204


# ---------------------------------------------------------------------------------------------- segmentation
@pytest.mark.slow
def test_session_geometry_and_safe_storage(app_client, segmented) -> None:
    app, client = app_client
    session, _, _ = segmented
    assert session["filename"] == "amos 0013_rm -rf.nii.gz"  # display only
    assert session["shape_zyx"] == [11, 512, 512] and session["modality"] == "CT"
    assert session["windows"] == ["abdomen", "bone", "lung", "raw"]
    v = session["views"]
    assert (v["axial"]["count"], v["coronal"]["count"], v["sagittal"]["count"]) == (11, 512, 512)
    assert (v["coronal"]["width"], v["coronal"]["height"]) == (512, 11)
    sdir = app.state.store.root / session["id"]
    names = {p.name for p in sdir.iterdir()}
    assert "upload.nii.gz" in names and not any("etc" in n or "amos" in n for n in names)


@pytest.mark.slow
def test_segmentation_of_real_ct(app_client, segmented) -> None:
    app, client = app_client
    session, job, result = segmented
    assert job["organs"] == ["liver", "kidney_right", "kidney_left"]
    assert job["progress"] == 1.0 and job["slices_total"] == 11
    assert any(0 < p < 1 for p in job["seen_progress"]), "progress must be visible while the job runs"
    rows = {o["id"]: o for o in result["organs"]}
    assert [o["label"] for o in result["organs"]] == [2, 3, 5]  # fixed values (TotalSegmentator v2), ascending
    assert all(rows[o]["present"] and re.fullmatch(r"#[0-9a-f]{6}", rows[o]["color"]) for o in rows)
    assert 50 < rows["liver"]["volume_ml"] < 2000 and 5 < rows["kidney_left"]["volume_ml"] < 400
    # agreement with the AMOS reference annotation (a real manual label)
    vol = app.state.store.get(session["id"]).volume
    res = app.state.store.get(session["id"]).result
    ref = load_labels(data_path("amos_0013_slab", "label.nii.gz"), vol)
    dice = {}
    for oid, value in (("liver", 6), ("kidney_right", 2), ("kidney_left", 3)):
        r, p = ref == value, res.masks[oid]
        dice[oid] = 2 * (r & p).sum() / max(int(r.sum() + p.sum()), 1)
    assert dice["liver"] > 0.7 and dice["kidney_right"] > 0.6 and dice["kidney_left"] > 0.6, dice


@pytest.mark.slow
def test_slices_and_overlays_in_display_orientation(app_client, segmented) -> None:
    _, client = app_client
    session, _, result = segmented
    sid = session["id"]
    base = f"/api/sessions/{sid}/views"
    sizes = {"axial": (512, 512), "coronal": (11, 512), "sagittal": (11, 512)}
    for view, (h, w) in sizes.items():
        idx = session["views"][view]["count"] // 2
        img = Image.open(io.BytesIO(client.get(f"{base}/{view}/{idx}/image.png").content))
        assert img.mode == "L" and img.size == (w, h)
        ov = Image.open(io.BytesIO(client.get(f"{base}/{view}/{idx}/overlay.png").content))
        assert ov.mode == "RGBA" and ov.size == (w, h)
    bone = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/axial/5/image.png?window=bone").content)))
    soft = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/axial/5/image.png?window=abdomen").content)))
    lung = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/axial/5/image.png?window=lung").content)))
    assert not np.array_equal(bone, soft) and not np.array_equal(lung, soft)
    # anterior is up: the spine (bright in the bone window) sits in the lower half of the axial image
    rows = np.nonzero(bone > 120)[0]  # above ~350 HU: bone (and the table)
    assert rows.size > 300 and rows.mean() > 300
    # patient right on the image left: the liver's overlay colour lies mostly in the left half
    colors = {o["id"]: tuple(int(o["color"][i : i + 2], 16) for i in (1, 3, 5)) for o in result["organs"]}
    ov = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/axial/5/overlay.png?organs=liver").content)))
    liver_cols = np.nonzero(np.all(ov[..., :3] == colors["liver"], axis=-1) & (ov[..., 3] > 0))[1]
    assert liver_cols.size > 1000 and liver_cols.mean() < 256
    ov = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/axial/5/overlay.png?organs=kidney_left").content)))
    assert not np.any(np.all(ov[..., :3] == colors["liver"], axis=-1) & (ov[..., 3] > 0))  # toggled off
    kid = np.nonzero(ov[..., 3] > 0)[1]
    assert kid.size > 100 and kid.mean() > 256
    _json_error(client.get(f"{base}/axial/11/image.png"), 422, "bad_slice")
    _json_error(client.get(f"{base}/oblique/1/image.png"), 422, "invalid_request")
    _json_error(client.get(f"{base}/axial/5/image.png?window=brain"), 422, "bad_window")
    _json_error(client.get(f"{base}/axial/5/overlay.png?organs=pancreas"), 422, "bad_organ")


@pytest.mark.slow
def test_downloads_on_the_input_grid(app_client, segmented, tmp_path: Path) -> None:
    app, client = app_client
    session, _, result = segmented
    sid = session["id"]
    src = nib.load(str(data_path(*AMOS)))
    r = client.get(f"/api/sessions/{sid}/download/labelmap")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    (tmp_path / "seg.nii.gz").write_bytes(r.content)
    seg = nib.load(str(tmp_path / "seg.nii.gz"))
    assert seg.shape == src.shape and np.array_equal(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) == {0, 2, 3, 5}  # kidneys and liver, fixed values
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/api/sessions/{sid}/download/masks").content))
    assert sorted(zf.namelist()) == [
        "masks/kidney_left.nii.gz",
        "masks/kidney_right.nii.gz",
        "masks/liver.nii.gz",
    ]
    report = client.get(f"/api/sessions/{sid}/download/report").json()
    assert set(report["organs"]) == {"liver", "kidney_right", "kidney_left"}
    assert report["input"] == session["filename"]
    assert str(app.state.store.root) not in json.dumps(report)
    rows = {o["id"]: o for o in result["organs"]}
    assert report["organs"]["liver"]["volume_ml"] == rows["liver"]["volume_ml"]


@pytest.mark.slow
def test_corrections_rerun_queue_and_cancel(app_client, segmented) -> None:
    app, client = app_client
    session, first_job, first_result = segmented
    sid = session["id"]
    res0 = app.state.store.get(sid).result
    # a point on the coronal view lands on the axial slice through it
    _json_error(
        client.post(
            f"/api/sessions/{sid}/corrections",
            json={"organ": "kidneys", "kind": "point", "view": "axial", "index": 5, "x": 10, "y": 10},
        ),
        422,
        "ambiguous_organ",
    )
    _json_error(
        client.post(
            f"/api/sessions/{sid}/corrections",
            json={"organ": "liver", "kind": "box", "view": "coronal", "index": 5, "box": [1, 1, 50, 8]},
        ),
        422,
        "bad_correction",
    )
    r = client.post(
        f"/api/sessions/{sid}/corrections",
        json={
            "organ": "liver",
            "kind": "point",
            "view": "coronal",
            "index": 300,
            "x": 120,
            "y": 3,
            "label": 1,
        },
    )
    assert r.status_code == 201
    assert r.json()[-1] == {
        "organ": "liver",
        "kind": "point",
        "z": 7,
        "y": 300.0,
        "x": 120.0,
        "label": 1,
        "box_xyxy": None,
    }
    assert client.delete(f"/api/sessions/{sid}/corrections").status_code == 204
    assert client.get(f"/api/sessions/{sid}/corrections").json() == []
    # a box on axial slice 5 around the right half (image columns) of the liver there
    z = 5
    m = res0.masks["liver"][z]
    ys, xs = np.nonzero(m)
    Y = m.shape[0]
    x0, x1 = float(xs.min()), float((xs.min() + xs.max()) // 2)
    rows = (Y - 1 - ys.max(), Y - 1 - ys.min())
    box = [x0, float(rows[0]), x1, float(rows[1])]
    r = client.post(
        f"/api/sessions/{sid}/corrections",
        json={"organ": "liver", "kind": "box", "view": "axial", "index": z, "box": box},
    )
    assert r.status_code == 201
    stored = r.json()[0]["box_xyxy"]
    assert stored == [x0, float(ys.min()), x1, float(ys.max())]
    # other sessions for the queue checks
    others = [_upload(client, data_path(*AMOS)).json()["id"] for _ in range(2)]
    r = client.post(f"/api/sessions/{sid}/segment", json={})  # re-run the last prompt with the correction
    assert r.status_code == 202
    rerun = r.json()
    t0 = time.monotonic()  # wait until the worker took it, so the queue (size 1) is empty again
    while client.get(f"/api/jobs/{rerun['id']}").json()["state"] == "queued" and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    _json_error(client.post(f"/api/sessions/{sid}/segment", json={}), 409, "job_active")
    r = client.post(f"/api/sessions/{others[0]}/segment", json={"prompt": "spleen"})
    assert r.status_code == 202 and r.json()["state"] == "queued"
    queued = r.json()
    r = client.post(f"/api/sessions/{others[1]}/segment", json={"prompt": "spleen"})
    _json_error(r, 429, "queue_full")
    assert int(r.headers["retry-after"]) > 0
    # deleting a session cancels its job and removes its files
    assert client.delete(f"/api/sessions/{others[0]}").status_code == 204
    assert client.get(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"
    assert not (app.state.store.root / others[0]).exists()
    assert client.delete(f"/api/sessions/{others[1]}").status_code == 204
    job = _wait(client, rerun["id"])
    assert job["state"] == "done", job
    report = client.get(f"/api/sessions/{sid}/result").json()["report"]
    assert report["encoded_slices"] == 11  # embeddings were reused, not recomputed
    # only decoding ran again: the re-run encoded nothing, the first run encoded every slice
    assert report["timings_s"]["encode"] < 0.1 * first_result["report"]["timings_s"]["encode"], report["timings_s"]
    res1 = app.state.store.get(sid).result
    new = res1.masks["liver"][z]
    inside = new[int(ys.min()) : int(ys.max()) + 1, int(x0) : int(x1) + 1].sum()
    assert new.sum() < m.sum() and inside >= 0.95 * new.sum()
    assert client.get(f"/api/sessions/{sid}").json()["result_version"] == 2
    assert report["corrections"][0]["kind"] == "box"


def test_session_limit_and_expiry(tmp_path: Path) -> None:
    settings = ServerSettings(max_sessions=1, session_ttl_s=1.0, reap_interval_s=0.2, workdir=tmp_path)
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as client:
        r = _upload(client, data_path(*AMOS))
        assert r.status_code == 201
        sid = r.json()["id"]
        busy = _upload(client, data_path(*AMOS))
        _json_error(busy, 503, "server_busy")
        assert int(busy.headers["retry-after"]) > 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and (app.state.store.root / sid).exists():
            time.sleep(0.1)
        assert not (app.state.store.root / sid).exists(), "the reaper must delete an idle session's folder"
        _json_error(client.get(f"/api/sessions/{sid}"), 404, "no_such_session")
        assert _upload(client, data_path(*AMOS)).status_code == 201  # room again
    assert list(tmp_path.iterdir()) == []


def test_serve_cli_defaults_to_loopback() -> None:
    from organsam.cli.main import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    args = build_parser().parse_args(["serve", "--port", "8123", "--max-upload-mb", "50", "--fast"])
    assert args.port == 8123 and args.max_upload_mb == 50 and args.fast
    assert ServerSettings().is_loopback and not ServerSettings(host="0.0.0.0").is_loopback
    with pytest.raises(ValueError, match="max_sessions"):
        ServerSettings(max_sessions=0)
