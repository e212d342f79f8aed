"""End to end: the viewer in headless Chromium against a real ``organsam serve`` process on loopback.

Uploads a real CT (4 slices of the AMOS 0013 slab, to keep the test short), types a misspelt prompt and
takes the parser's suggestion, waits for the coloured overlay, toggles it, and saves a screenshot
(``viewer.png`` in the test's tmp folder; also copied to ``$ORGANSAM_SCREENSHOT_DIR`` when set).

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``scripts/ci_browser_deps.sh`` installs them)
and selenium (dev extra); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import pytest
from conftest import data_path

pytest.importorskip("fastapi", reason="the web app needs the 'serve' extra (fastapi, uvicorn)")
pytest.importorskip("uvicorn", reason="the web app needs the 'serve' extra (uvicorn)")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")

COLOURED_PIXELS_JS = """
const c = document.getElementById('canvas-axial');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) {
  const mx = Math.max(d[i], d[i + 1], d[i + 2]), mn = Math.min(d[i], d[i + 1], d[i + 2]);
  if (mx - mn > 40) n++;
}
return n;
"""


def _skip_without_browser() -> None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip(
            "headless Chromium is not available: install the Debian packages 'chromium' and "
            "'chromium-driver' (bash scripts/ci_browser_deps.sh)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``organsam serve`` process (the CLI) on a free loopback port."""
    _skip_without_browser()
    import httpx

    port = _free_port()
    work = tmp_path_factory.mktemp("serve-work")
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "organsam.cli.main", "serve", "--port", str(port), "--workdir", str(work)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError(f"organsam serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert list(work.iterdir()) == [], "the server must remove its session folders when it stops"


@pytest.fixture
def browser():
    _skip_without_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="organsam-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1500,1000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # a broken local Chromium install is an environment problem, not a failure of ours
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium could not start: {type(e).__name__}: {str(e).splitlines()[0]}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_viewer_uploads_segments_and_shows_overlay(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ct = tmp_path / "amos_0013_4slices.nii.gz"
    nib.save(nib.load(str(data_path("amos_0013_slab", "image.nii.gz"))).slicer[:, :, 4:8], str(ct))
    d = browser
    d.get(server + "/")
    assert d.title == "organsam viewer"
    d.find_element(By.ID, "file").send_keys(str(ct))
    d.find_element(By.ID, "upload-btn").click()
    WebDriverWait(d, 60).until(lambda d: d.find_element(By.ID, "prompt").is_enabled())
    assert "4 x 512 x 512" in d.find_element(By.ID, "status").text
    window_options = [o.text for o in d.find_elements(By.CSS_SELECTOR, "#window option")]
    assert window_options == ["auto", "abdomen", "bone", "lung", "raw", "custom"]

    # an unknown word: the parser's suggestions appear as buttons
    prompt = d.find_element(By.ID, "prompt")
    prompt.send_keys("livr")
    d.find_element(By.ID, "segment-btn").click()
    WebDriverWait(d, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#status .suggestion"))
    assert "unknown organ" in d.find_element(By.ID, "status").text
    sugg = [b for b in d.find_elements(By.CSS_SELECTOR, "#status .suggestion") if b.text == "liver"]
    assert sugg, [b.text for b in d.find_elements(By.CSS_SELECTOR, "#status .suggestion")]
    sugg[0].click()
    assert prompt.get_attribute("value") == "liver"

    d.find_element(By.ID, "segment-btn").click()
    stages: set[str] = set()

    def finished(d) -> bool:
        stages.add(d.find_element(By.ID, "status").text.split(":")[0])
        return d.execute_script("return document.body.dataset.overlayVersion") == "1"

    WebDriverWait(d, 400, poll_frequency=0.3).until(finished)
    assert any(s.startswith(("encoding", "locating", "loading", "Waiting", "segmenting")) for s in stages), stages
    row = d.find_element(By.CSS_SELECTOR, "#organ-table tr[data-organ=liver]")
    assert float(row.get_attribute("data-volume-ml")) > 10
    assert "liver" in d.find_element(By.ID, "legend").text
    time.sleep(0.5)
    shown = d.execute_script(COLOURED_PIXELS_JS)
    # toggle the liver off: only the crosshair stays coloured
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    WebDriverWait(d, 20).until(lambda d: d.execute_script(COLOURED_PIXELS_JS) < shown / 3)
    hidden = d.execute_script(COLOURED_PIXELS_JS)
    assert shown > hidden + 1000, (shown, hidden)
    row.find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    WebDriverWait(d, 20).until(lambda d: d.execute_script(COLOURED_PIXELS_JS) > hidden + 1000)

    # corrections: a point and a box on the axial view (over the liver, patient right = image left), re-run
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = d.find_element(By.ID, "canvas-axial")
    d.find_element(By.CSS_SELECTOR, "input[name=tool][value=point1]").click()
    ActionChains(d).move_to_element_with_offset(canvas, -85, 10).click().perform()
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "corr-count").text.startswith("1 correction"))
    d.find_element(By.CSS_SELECTOR, "input[name=tool][value=box]").click()
    ActionChains(d).move_to_element_with_offset(canvas, -125, -45).click_and_hold().move_by_offset(
        70, 110
    ).release().perform()
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "corr-count").text.startswith("2 correction"))
    d.find_element(By.ID, "rerun-btn").click()
    WebDriverWait(d, 300, poll_frequency=0.3).until(
        lambda d: d.execute_script("return document.body.dataset.overlayVersion") == "2"
    )
    assert "Segmented" in d.find_element(By.ID, "status").text

    links = {a: d.find_element(By.ID, f"dl-{a}").get_attribute("href") for a in ("labelmap", "masks", "report")}
    assert all(h.startswith(server + "/api/sessions/") and h.endswith(a) for a, h in links.items()), links

    shot = tmp_path / "viewer.png"
    assert d.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
    if os.environ.get("ORGANSAM_SCREENSHOT_DIR"):
        dest = Path(os.environ["ORGANSAM_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "viewer.png")
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not [e for e in severe if "Content Security Policy" in e.get("message", "")], severe
    assert not [e for e in severe if "422" not in e.get("message", "")], severe  # only the refused 'livr'


BRIGHTNESS_JS = """
const c = document.getElementById('canvas-axial');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let sum = 0, dark = 0;
for (let i = 0; i < d.length; i += 4) { const g = (d[i] + d[i + 1] + d[i + 2]) / 3; sum += g; if (g < 8) dark++; }
return [sum / (d.length / 4), dark / (d.length / 4)];
"""


@pytest.mark.slow
def test_viewer_zoom_window_level_and_value_readout(server: str, browser, tmp_path: Path) -> None:
    """A radiologist's basics on a real CT: the value under the cursor in HU with the file's own voxel index,
    zoom, a free window/level, and an error that goes away once the prompt is edited."""
    import numpy as np
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ct = tmp_path / "amos_0013_4slices.nii.gz"
    src = nib.load(str(data_path("amos_0013_slab", "image.nii.gz"))).slicer[:, :, 4:8]
    nib.save(src, str(ct))
    hu = np.asarray(src.dataobj)
    d = browser
    d.get(server + "/")
    d.find_element(By.ID, "file").send_keys(str(ct))
    d.find_element(By.ID, "upload-btn").click()
    WebDriverWait(d, 60).until(lambda d: d.find_element(By.ID, "prompt").is_enabled())
    WebDriverWait(d, 20).until(lambda d: d.execute_script(BRIGHTNESS_JS)[0] > 5)
    assert d.find_element(By.CSS_SELECTOR, "a[href='/openapi.json']")  # the API description, served locally
    # slices are numbered as in the input file (k of this NIfTI), beside their place in the stack
    assert d.find_element(By.CSS_SELECTOR, "figure[data-view=axial] .idx").text.startswith("k = ")

    # the value under the cursor: HU, at the input file's own (i, j, k), equal to the file's voxel there
    canvas = d.find_element(By.ID, "canvas-axial")
    ActionChains(d).move_to_element_with_offset(canvas, -40, 30).perform()
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "readout").get_attribute("data-value"))
    text = d.find_element(By.ID, "readout").text
    assert " HU at (i, j, k) = (" in text, text
    i, j, k = (int(v) for v in text.split("(i, j, k) = (")[1].split(")")[0].split(", "))
    assert float(d.find_element(By.ID, "readout").get_attribute("data-value")) == pytest.approx(hu[i, j, k], abs=0.1)

    # zoom: the body fills more of the canvas (less air)
    mean0, dark0 = d.execute_script(BRIGHTNESS_JS)
    d.find_element(By.ID, "zoom-in").click()
    d.find_element(By.ID, "zoom-in").click()
    assert float(d.execute_script("return document.body.dataset.zoom")) == pytest.approx(1.5625)
    WebDriverWait(d, 20).until(lambda d: d.execute_script(BRIGHTNESS_JS)[1] < dark0 - 0.05)
    d.find_element(By.ID, "zoom-reset").click()
    WebDriverWait(d, 20).until(lambda d: abs(d.execute_script(BRIGHTNESS_JS)[1] - dark0) < 0.02)

    # window/level typed in: a bone window (level 1000, width 400) leaves soft tissue black
    for field, value in (("level", "1000"), ("width", "400")):
        box = d.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    d.find_element(By.ID, "width").send_keys("\t")
    WebDriverWait(d, 20).until(lambda d: d.execute_script("return document.body.dataset.window") == "1000,400")
    WebDriverWait(d, 20).until(lambda d: d.execute_script(BRIGHTNESS_JS)[0] < mean0 / 3)
    assert d.find_element(By.ID, "window").get_attribute("value") == "custom"

    # an error about the prompt goes away once the prompt is edited
    prompt = d.find_element(By.ID, "prompt")
    prompt.send_keys("livr")
    d.find_element(By.ID, "segment-btn").click()
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "status").get_attribute("class") == "error")
    prompt.send_keys("e")
    WebDriverWait(d, 20).until(lambda d: d.find_element(By.ID, "status").get_attribute("class") != "error")
