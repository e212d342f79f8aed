// organsam viewer: plain JavaScript, no external resources. Talks to the JSON API of `organsam serve`.
// Slice images and overlays are PNGs rendered by the server in display orientation:
//   axial:    image[r][c] = volume[z][Y-1-r][c]      (anterior up, patient right on the image left)
//   coronal:  image[r][c] = volume[Z-1-r][y][c]      (superior up)
//   sagittal: image[r][c] = volume[Z-1-r][Y-1-c][x]  (superior up, anterior on the left)
"use strict";

(function () {
  const VIEWS = ["axial", "coronal", "sagittal"];
  const AXIS = { axial: 0, coronal: 1, sagittal: 2 }; // which voxel coordinate a view's slider moves
  const BOX_PX = 380; // largest canvas side in CSS pixels
  const MIN_H = 160; // a thin slab's coronal/sagittal strip sits in a canvas at least this tall (zoom to fill it)
  const ZOOM_STEP = 1.25, ZOOM_MAX = 16;

  const st = {
    session: null,
    voxel: [0, 0, 0], // cursor (z, y, x) in canonical voxels
    window: "auto", // a preset name or "LEVEL,WIDTH"
    zoom: { axial: 1, coronal: 1, sagittal: 1 },
    center: { axial: null, coronal: null, sagittal: null }, // image point at the canvas centre (null: middle)
    pan: null,
    wl: null,
    opacity: 0.5,
    result: null, // {version, organs, report}
    visible: new Set(),
    corrections: [],
    tool: "navigate",
    drag: null,
    polling: null,
    images: new Map(),
  };

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, props = {}, children = []) => {
    const e = document.createElement(tag);
    Object.assign(e, props);
    for (const c of children) e.append(c);
    return e;
  };

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(status, body) {
      super(body && body.detail ? body.detail : `HTTP ${status}`);
      this.status = status;
      this.body = body || {};
    }
  }

  async function api(method, url, body) {
    const opts = { method, headers: {} };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(url, opts);
    if (resp.status === 204) return null;
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  // ------------------------------------------------------------------ status line
  function setStatus(text, isError = false, suggestions = null, term = null) {
    const s = $("#status");
    s.textContent = text;
    s.className = isError ? "error" : "";
    if (suggestions && suggestions.length) {
      for (const sug of suggestions) {
        const b = el("button", { type: "button", className: "suggestion", textContent: sug });
        b.addEventListener("click", () => {
          const p = $("#prompt");
          p.value = term ? p.value.replace(new RegExp(escapeRe(term), "i"), sug) : sug;
          p.dispatchEvent(new Event("input"));
          p.focus();
        });
        s.append(b);
      }
    }
  }

  function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  function showError(e, what) {
    if (e instanceof ApiError) {
      setStatus(`${what}: ${e.message}`, true, e.body.suggestions, e.body.term);
    } else {
      setStatus(`${what}: ${e.message || e}`, true);
    }
  }

  // ------------------------------------------------------------------ geometry
  function viewInfo(view) { return st.session.views[view]; }

  function sliceIndex(view) { return st.voxel[AXIS[view]]; }

  function displayToVoxel(view, index, c, r) {
    const [Z, Y] = st.session.shape_zyx;
    if (view === "axial") return [index, Y - 1 - r, c];
    if (view === "coronal") return [Z - 1 - r, index, c];
    return [Z - 1 - r, Y - 1 - c, index];
  }

  function voxelToDisplay(view, z, y, x) { // -> [slice index, column, row]
    const [Z, Y] = st.session.shape_zyx;
    if (view === "axial") return [Math.round(z), x, Y - 1 - y];
    if (view === "coronal") return [Math.round(y), x, Z - 1 - z];
    return [Math.round(x), Y - 1 - y, Z - 1 - z];
  }

  function fitSize(view) { // the image's size in canvas pixels at zoom 1 (true aspect in mm)
    const v = viewInfo(view);
    const wmm = v.width * v.pixel_w_mm, hmm = v.height * v.pixel_h_mm;
    const scale = Math.min(BOX_PX / wmm, BOX_PX / hmm);
    return [Math.max(1, Math.round(wmm * scale)), Math.max(1, Math.round(hmm * scale))];
  }

  function viewport(view) { // canvas size, canvas px per image px, and where image (0, 0) lands
    const v = viewInfo(view);
    const [fw, fh] = fitSize(view);
    const W = fw, H = Math.max(fh, Math.min(MIN_H, BOX_PX));
    const z = st.zoom[view];
    const kx = (fw / v.width) * z, ky = (fh / v.height) * z;
    const [cc, rc] = st.center[view] || [v.width / 2, v.height / 2];
    return { W, H, kx, ky, ox: W / 2 - cc * kx, oy: H / 2 - rc * ky };
  }

  function canvasPoint(view, ev) { // the event's position in canvas pixels
    const canvas = $(`#canvas-${view}`);
    const rect = canvas.getBoundingClientRect();
    return [((ev.clientX - rect.left) / rect.width) * canvas.width, ((ev.clientY - rect.top) / rect.height) * canvas.height];
  }

  function eventToImage(view, ev, clamp = true) {
    const v = viewInfo(view), vp = viewport(view);
    const [px, py] = canvasPoint(view, ev);
    const c = (px - vp.ox) / vp.kx, r = (py - vp.oy) / vp.ky;
    if (!clamp) return [c, r];
    return [Math.min(v.width - 1, Math.max(0, c)), Math.min(v.height - 1, Math.max(0, r))];
  }

  function setZoom(view, zoom, around = null) { // zoom keeping the image point `around` where it is
    const v = viewInfo(view);
    const z = Math.min(ZOOM_MAX, Math.max(1, zoom));
    const [cc, rc] = st.center[view] || [v.width / 2, v.height / 2];
    if (around && z !== st.zoom[view]) {
      const f = st.zoom[view] / z; // keep `around` fixed on the canvas
      st.center[view] = [around[0] + (cc - around[0]) * f, around[1] + (rc - around[1]) * f];
    }
    st.zoom[view] = z;
    if (z === 1) st.center[view] = null;
    document.body.dataset.zoom = String(st.zoom.axial);
  }

  // ------------------------------------------------------------------ images
  function loadImage(url) {
    let p = st.images.get(url);
    if (!p) {
      p = new Promise((resolve, reject) => {
        const img = new Image();
        img.onload = () => resolve(img);
        img.onerror = () => reject(new Error(`could not load ${url}`));
        img.src = url;
      });
      st.images.set(url, p);
      p.catch(() => st.images.delete(url));
      if (st.images.size > 300) st.images.delete(st.images.keys().next().value);
    }
    return p;
  }

  function baseUrl(view, index) {
    return `/api/sessions/${st.session.id}/views/${view}/${index}/image.png?window=${encodeURIComponent(st.window)}`;
  }

  function overlayUrl(view, index) {
    const organs = [...st.visible].join(",");
    return `/api/sessions/${st.session.id}/views/${view}/${index}/overlay.png?organs=${encodeURIComponent(organs)}` +
      `&v=${st.result.version}`;
  }

  const drawSeq = { axial: 0, coronal: 0, sagittal: 0 };

  async function draw(view) {
    if (!st.session) return;
    const seq = ++drawSeq[view];
    const index = sliceIndex(view);
    const canvas = $(`#canvas-${view}`);
    const vp = viewport(view), v = viewInfo(view);
    const w = vp.W, h = vp.H;
    let base, overlay = null;
    try {
      base = await loadImage(baseUrl(view, index));
      if (st.result && st.visible.size) overlay = await loadImage(overlayUrl(view, index));
    } catch (e) {
      showError(e, "image");
      return;
    }
    if (seq !== drawSeq[view]) return; // a newer draw of this view started
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    ctx.imageSmoothingEnabled = st.zoom[view] < 2; // zoomed in: show the voxels
    ctx.globalAlpha = 1;
    ctx.drawImage(base, vp.ox, vp.oy, v.width * vp.kx, v.height * vp.ky);
    if (overlay) {
      ctx.imageSmoothingEnabled = false;
      ctx.globalAlpha = st.opacity;
      ctx.drawImage(overlay, vp.ox, vp.oy, v.width * vp.kx, v.height * vp.ky);
      ctx.globalAlpha = 1;
      document.body.dataset.overlayVersion = String(st.result.version);
    }
    drawCrosshair(view, ctx, vp);
    drawCorrections(view, ctx, vp);
    if (st.drag && st.drag.view === view) {
      ctx.strokeStyle = "#ffffff";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(vp.ox + st.drag.c0 * vp.kx, vp.oy + st.drag.r0 * vp.ky, (st.drag.c1 - st.drag.c0) * vp.kx,
        (st.drag.r1 - st.drag.r0) * vp.ky);
      ctx.setLineDash([]);
    }
    const fig = canvas.closest("figure");
    const info = viewInfo(view);
    const fileIndex = info.file_reversed ? info.count - 1 - index : index;
    // the input file's own slice number (as ITK-SNAP or 3D Slicer show it), and the position in the stack
    fig.querySelector(".idx").textContent = info.file_axis
      ? `${info.file_axis} = ${fileIndex} (${index + 1} of ${info.count})` : `${index + 1} / ${info.count}`;
  }

  function drawCrosshair(view, ctx, vp) {
    const [, c, r] = voxelToDisplay(view, ...st.voxel);
    ctx.strokeStyle = "rgba(255, 220, 0, 0.55)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(vp.ox + (c + 0.5) * vp.kx, 0); ctx.lineTo(vp.ox + (c + 0.5) * vp.kx, vp.H);
    ctx.moveTo(0, vp.oy + (r + 0.5) * vp.ky); ctx.lineTo(vp.W, vp.oy + (r + 0.5) * vp.ky);
    ctx.stroke();
  }

  function drawCorrections(view, ctx, vp) {
    const here = sliceIndex(view);
    const Y = st.session.shape_zyx[1];
    for (const corr of st.corrections) {
      if (corr.kind === "point") {
        const [idx, c, r] = voxelToDisplay(view, corr.z, corr.y, corr.x);
        if (idx !== here) continue;
        ctx.fillStyle = corr.label ? "#3cff6e" : "#ff4040";
        ctx.beginPath();
        ctx.arc(vp.ox + (c + 0.5) * vp.kx, vp.oy + (r + 0.5) * vp.ky, 4, 0, 2 * Math.PI);
        ctx.fill();
        ctx.strokeStyle = "#000";
        ctx.stroke();
      } else if (view === "axial" && corr.z === here) {
        const [x0, y0, x1, y1] = corr.box_xyxy;
        ctx.strokeStyle = "#3cff6e";
        ctx.lineWidth = 2;
        ctx.strokeRect(vp.ox + x0 * vp.kx, vp.oy + (Y - 1 - y1) * vp.ky, (x1 - x0) * vp.kx, (y1 - y0) * vp.ky);
        ctx.lineWidth = 1;
      }
    }
  }

  function drawAll() { for (const v of VIEWS) draw(v); }

  // ------------------------------------------------------------------ session
  async function upload(ev) {
    ev.preventDefault();
    const file = $("#file").files[0];
    if (!file) { setStatus("Choose a file first.", true); return; }
    const form = new FormData();
    form.append("file", file);
    form.append("modality", $("#modality").value);
    $("#upload-btn").disabled = true;
    setStatus(`Uploading ${file.name} (${(file.size / 1048576).toFixed(1)} MB)...`);
    try {
      const s = await api("POST", "/api/sessions", form);
      if (st.session) api("DELETE", `/api/sessions/${st.session.id}`).catch(() => {});
      openSession(s);
      setStatus(`${s.filename}: ${s.modality} ${s.shape_zyx.join(" x ")} voxels. Type the organs to segment.`);
    } catch (e) {
      showError(e, "Upload failed");
    } finally {
      $("#upload-btn").disabled = false;
    }
  }

  function openSession(s) {
    st.session = s;
    st.result = null;
    st.visible = new Set();
    st.prevIds = new Set();
    st.corrections = [];
    st.images.clear();
    st.voxel = s.shape_zyx.map((n) => Math.floor(n / 2));
    for (const v of VIEWS) { st.zoom[v] = 1; st.center[v] = null; }
    document.body.dataset.zoom = "1";
    const win = $("#window");
    win.replaceChildren(...["auto", ...s.windows, "custom"].map((w) => el("option", { value: w, textContent: w })));
    win.value = "auto";
    st.window = "auto";
    win.disabled = false;
    showWindowLevel(s.window_levels[s.default_window]);
    for (const view of VIEWS) {
      const sl = $(`#slider-${view}`);
      sl.max = String(s.views[view].count - 1);
      sl.value = String(sliceIndex(view));
      sl.disabled = false;
    }
    $("#prompt").disabled = false;
    $("#segment-btn").disabled = false;
    renderResult();
    renderCorrections();
    drawAll();
  }

  // ------------------------------------------------------------------ segmentation
  async function segment(ev, rerun = false) {
    if (ev) ev.preventDefault();
    if (!st.session) return;
    const prompt = $("#prompt").value.trim();
    if (!rerun && !prompt) { setStatus("Type the organs to segment, e.g. \"liver and both kidneys\".", true); return; }
    try {
      const job = await api("POST", `/api/sessions/${st.session.id}/segment`, rerun ? {} : { prompt });
      setBusy(true);
      pollJob(job);
    } catch (e) {
      showError(e, rerun ? "Re-run refused" : "Segmentation refused");
    }
  }

  function setBusy(busy) {
    $("#segment-btn").disabled = busy || !st.session;
    $("#rerun-btn").disabled = busy || !st.result;
    $("#progress").hidden = !busy;
  }

  function showJob(job) {
    $("#progress").value = job.progress;
    let text;
    if (job.state === "queued") text = `Waiting for the model (${job.queue_position || 0} job(s) ahead)...`;
    else if (job.slices_total) text = `${job.stage}: ${job.slices_done} / ${job.slices_total}`;
    else text = `${job.stage}...`;
    setStatus(text);
  }

  function pollJob(job) {
    if (st.polling) clearTimeout(st.polling);
    const sid = st.session.id;
    const tick = async () => {
      let j;
      try {
        j = await api("GET", `/api/jobs/${job.id}`);
      } catch (e) {
        setBusy(false);
        showError(e, "Lost the job");
        return;
      }
      if (!st.session || st.session.id !== sid) return;
      showJob(j);
      if (j.state === "queued" || j.state === "running") {
        st.polling = setTimeout(tick, 400);
        return;
      }
      st.polling = null;
      setBusy(false);
      if (j.state === "done") {
        await loadResult();
        const secs = j.finished && j.started ? ` in ${(j.finished - j.started).toFixed(1)} s` : "";
        setStatus(`Segmented ${j.organs.length} organ(s)${secs}.`);
      } else {
        setStatus(`Segmentation ${j.state}: ${j.error || ""}`, true);
      }
    };
    showJob(job);
    st.polling = setTimeout(tick, 300);
  }

  async function loadResult() {
    const r = await api("GET", `/api/sessions/${st.session.id}/result`);
    const keep = st.result ? st.visible : null;
    st.result = r;
    st.visible = new Set(r.organs.filter((o) => !keep || keep.has(o.id) || !st.prevIds.has(o.id)).map((o) => o.id));
    st.prevIds = new Set(r.organs.map((o) => o.id));
    renderResult();
    await refreshCorrections();
    drawAll();
  }
  st.prevIds = new Set();

  function renderResult() {
    const body = $("#organ-table tbody");
    const legend = $("#legend");
    const sel = $("#corr-organ");
    body.replaceChildren();
    legend.replaceChildren();
    const r = st.result;
    $("#no-result").hidden = !!r;
    for (const a of ["labelmap", "masks", "report"]) {
      const link = $(`#dl-${a}`);
      if (r && st.session) {
        link.href = `/api/sessions/${st.session.id}/download/${a}`;
        link.className = "";
      } else {
        link.href = "#";
        link.className = "disabled";
      }
    }
    const prevSel = sel.value;
    sel.replaceChildren();
    if (!r) { sel.disabled = true; setBusy(false); return; }
    for (const o of r.organs) {
      const cb = el("input", { type: "checkbox", checked: st.visible.has(o.id), title: `show ${o.name}` });
      cb.dataset.organ = o.id;
      cb.addEventListener("change", () => {
        if (cb.checked) st.visible.add(o.id); else st.visible.delete(o.id);
        drawAll();
      });
      const sw = el("span", { className: "swatch" });
      sw.style.background = o.color;
      const tr = el("tr", { className: o.present ? "present" : "absent" }, [
        el("td", {}, [cb]),
        el("td", {}, [sw]),
        el("td", { textContent: o.name }),
        el("td", { className: "num", textContent: o.present ? o.volume_ml.toFixed(1) : "absent" }),
        el("td", { className: "num", textContent: o.present ? o.confidence.toFixed(2) : "" }),
      ]);
      tr.dataset.organ = o.id;
      tr.dataset.volumeMl = String(o.volume_ml);
      body.append(tr);
      const sw2 = el("span", { className: "swatch" });
      sw2.style.background = o.color;
      legend.append(el("span", { className: "legend-item" }, [sw2, el("span", { textContent: o.name })]));
      sel.append(el("option", { value: o.id, textContent: o.name }));
    }
    if ([...sel.options].some((o) => o.value === prevSel)) sel.value = prevSel;
    sel.disabled = false;
    setBusy(false);
  }

  // ------------------------------------------------------------------ corrections
  async function refreshCorrections() {
    st.corrections = await api("GET", `/api/sessions/${st.session.id}/corrections`);
    renderCorrections();
  }

  function renderCorrections() {
    const n = st.corrections.length;
    $("#corr-count").textContent = n ? `${n} correction(s); Re-run applies them.` : "No corrections.";
    $("#clear-btn").disabled = !n;
  }

  async function addCorrection(body) {
    if (!st.result) { setStatus("Segment first, then correct.", true); return; }
    body.organ = $("#corr-organ").value;
    try {
      st.corrections = await api("POST", `/api/sessions/${st.session.id}/corrections`, body);
      renderCorrections();
      drawAll();
    } catch (e) {
      showError(e, "Correction refused");
    }
  }

  async function clearCorrections() {
    try {
      await api("DELETE", `/api/sessions/${st.session.id}/corrections`);
      st.corrections = [];
      renderCorrections();
      drawAll();
    } catch (e) {
      showError(e, "Could not clear");
    }
  }

  // ------------------------------------------------------------------ mouse
  function onDown(view, ev) {
    if (!st.session) return;
    if (st.tool === "pan" || ev.button === 1) {
      ev.preventDefault();
      const v = viewInfo(view);
      st.pan = { view, at: canvasPoint(view, ev), center: st.center[view] || [v.width / 2, v.height / 2] };
      return;
    }
    if (st.tool === "wl") {
      st.wl = { at: [ev.clientX, ev.clientY], from: currentWindowLevel() };
      return;
    }
    const [c, r] = eventToImage(view, ev);
    const index = sliceIndex(view);
    if (st.tool === "navigate") {
      st.voxel = displayToVoxel(view, index, Math.floor(c), Math.floor(r)).map((v) => Math.round(v));
      for (const v of VIEWS) $(`#slider-${v}`).value = String(sliceIndex(v));
      drawAll();
    } else if (st.tool === "point1" || st.tool === "point0") {
      addCorrection({ kind: "point", view, index, x: c, y: r, label: st.tool === "point1" ? 1 : 0 });
    } else if (st.tool === "box") {
      if (view !== "axial") { setStatus("Boxes are drawn on the axial view.", true); return; }
      st.drag = { view, c0: c, r0: r, c1: c, r1: r, sc: c, sr: r };
    }
  }

  function onMove(view, ev) {
    if (st.pan && st.pan.view === view) {
      const [px, py] = canvasPoint(view, ev), vp = viewport(view);
      st.center[view] = [st.pan.center[0] - (px - st.pan.at[0]) / vp.kx, st.pan.center[1] - (py - st.pan.at[1]) / vp.ky];
      draw(view);
      return;
    }
    if (st.wl) { // right/left: wider/narrower window; up/down: lower/higher level
      const [l0, w0] = st.wl.from;
      const dx = ev.clientX - st.wl.at[0], dy = ev.clientY - st.wl.at[1];
      applyWindowLevel(l0 - dy * Math.max(1, w0 / 200), Math.max(1, w0 + dx * Math.max(1, w0 / 100)));
      return;
    }
    readout(view, ev);
    if (!st.drag || st.drag.view !== view) return;
    const [c, r] = eventToImage(view, ev);
    st.drag.c0 = Math.min(st.drag.sc, c); st.drag.c1 = Math.max(st.drag.sc, c);
    st.drag.r0 = Math.min(st.drag.sr, r); st.drag.r1 = Math.max(st.drag.sr, r);
    draw(view);
  }

  function onUp(view) {
    st.pan = null;
    st.wl = null;
    if (!st.drag || st.drag.view !== view) return;
    const d = st.drag;
    st.drag = null;
    if (d.c1 - d.c0 >= 2 && d.r1 - d.r0 >= 2) {
      addCorrection({ kind: "box", view, index: sliceIndex(view), box: [d.c0, d.r0, d.c1, d.r1] });
    } else {
      draw(view);
    }
  }

  // ------------------------------------------------------------------ window / level and the value under the cursor
  function currentWindowLevel() {
    const l = Number($("#level").value), w = Number($("#width").value);
    return [Number.isFinite(l) ? l : 40, Number.isFinite(w) && w > 0 ? w : 400];
  }

  function showWindowLevel(lw) {
    if (!lw) return;
    $("#level").value = String(Math.round(lw[0]));
    $("#width").value = String(Math.round(lw[1]));
  }

  function applyWindowLevel(level, width, typed = false) {
    level = Math.round(level); width = Math.max(1, Math.round(width));
    if (!typed) showWindowLevel([level, width]); // never rewrite a field the user is typing in
    st.window = `${level},${width}`;
    $("#window").value = "custom";
    document.body.dataset.window = st.window;
    if (!wlTimer) wlTimer = setTimeout(() => { wlTimer = null; drawAll(); }, 150); // a drag: ~7 redraws a second
  }
  let wlTimer = null;

  let readoutSeq = 0, readoutTimer = null;
  function readout(view, ev) { // the value under the cursor (HU on CT), the input's voxel index, the organs there
    if (!st.session) return;
    const [c, r] = eventToImage(view, ev, false);
    const v = viewInfo(view);
    if (c < 0 || r < 0 || c >= v.width || r >= v.height) return;
    const [z, y, x] = displayToVoxel(view, sliceIndex(view), Math.floor(c), Math.floor(r));
    clearTimeout(readoutTimer);
    readoutTimer = setTimeout(async () => {
      const seq = ++readoutSeq;
      try {
        const p = await api("GET", `/api/sessions/${st.session.id}/voxel?z=${z}&y=${y}&x=${x}`);
        if (seq !== readoutSeq) return;
        const organs = p.organs.length ? ` \u2014 ${p.organs.join(", ")}` : "";
        $("#readout").textContent = `${p.value}${p.unit ? " " + p.unit : ""} at (i, j, k) = (${p.ijk.join(", ")})${organs}`;
        $("#readout").dataset.value = String(p.value);
      } catch (e) { /* the cursor moved off the volume */ }
    }, 40);
  }

  function zoomAll(factor) {
    for (const v of VIEWS) setZoom(v, factor === null ? 1 : st.zoom[v] * factor);
    drawAll();
  }

  // ------------------------------------------------------------------ prompt feedback
  let parseTimer = null;
  function onPromptInput() {
    clearTimeout(parseTimer);
    if ($("#status").className === "error") setStatus(""); // the error was about the prompt being edited
    const text = $("#prompt").value.trim();
    const out = $("#parsed");
    if (!text) { out.textContent = ""; return; }
    parseTimer = setTimeout(async () => {
      try {
        const r = await api("POST", "/api/parse", { text });
        out.className = "hint";
        out.textContent = "\u2192 " + r.organs.map((o) => o.name).join(", ");
      } catch (e) {
        out.className = "hint error";
        out.textContent = e.message;
      }
    }, 300);
  }

  // ------------------------------------------------------------------ wiring
  function init() {
    $("#upload-form").addEventListener("submit", upload);
    $("#prompt-form").addEventListener("submit", (ev) => segment(ev, false));
    $("#prompt").addEventListener("input", onPromptInput);
    $("#rerun-btn").addEventListener("click", () => segment(null, true));
    $("#clear-btn").addEventListener("click", clearCorrections);
    $("#window").addEventListener("change", (ev) => {
      if (ev.target.value === "custom") return;
      st.window = ev.target.value;
      document.body.dataset.window = st.window;
      const levels = st.session.window_levels;
      showWindowLevel(levels[ev.target.value === "auto" ? st.session.default_window : ev.target.value]);
      drawAll();
    });
    for (const id of ["#level", "#width"]) {
      $(id).addEventListener("change", () => {
        const l = $("#level").value, w = $("#width").value;
        if (l.trim() === "" || w.trim() === "" || !(Number(w) > 0)) return; // wait for both numbers
        applyWindowLevel(Number(l), Number(w), true);
      });
    }
    $("#zoom-in").addEventListener("click", () => zoomAll(ZOOM_STEP));
    $("#zoom-out").addEventListener("click", () => zoomAll(1 / ZOOM_STEP));
    $("#zoom-reset").addEventListener("click", () => zoomAll(null));
    $("#opacity").addEventListener("input", (ev) => { st.opacity = Number(ev.target.value) / 100; drawAll(); });
    for (const r of document.querySelectorAll("input[name=tool]")) {
      r.addEventListener("change", () => { if (r.checked) st.tool = r.value; });
    }
    for (const view of VIEWS) {
      const sl = $(`#slider-${view}`);
      sl.addEventListener("input", () => { st.voxel[AXIS[view]] = Number(sl.value); drawAll(); });
      const canvas = $(`#canvas-${view}`);
      canvas.addEventListener("mousedown", (ev) => onDown(view, ev));
      canvas.addEventListener("mousemove", (ev) => onMove(view, ev));
      canvas.addEventListener("mouseup", () => onUp(view));
      canvas.addEventListener("mouseleave", () => onUp(view));
      canvas.addEventListener("wheel", (ev) => {
        if (!st.session) return;
        ev.preventDefault();
        if (ev.ctrlKey || ev.metaKey) { // ctrl + wheel: zoom about the cursor
          setZoom(view, st.zoom[view] * (ev.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP), eventToImage(view, ev, false));
          draw(view);
          return;
        }
        const n = viewInfo(view).count;
        const i = Math.min(n - 1, Math.max(0, sliceIndex(view) + (ev.deltaY > 0 ? -1 : 1)));
        st.voxel[AXIS[view]] = i;
        sl.value = String(i);
        drawAll();
      }, { passive: false });
    }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
