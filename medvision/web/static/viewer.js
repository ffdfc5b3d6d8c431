// medvision viewer: plain JavaScript, no framework, no build step.
// The server renders every slice and overlay as PNG; this script only picks which URL to
// show (slice index, window/level, overlay opacity) and posts the reviewer's feedback.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);
  const slice = document.getElementById("slice");
  const overlay = document.getElementById("overlay");
  const marksSvg = document.getElementById("marks");
  const stage = document.getElementById("stage");
  const slider = document.getElementById("slider");
  const label = document.getElementById("slice-label");
  const wlLabel = document.getElementById("wl");
  const status = document.getElementById("status");
  const opacity = document.getElementById("opacity");
  const organs = document.getElementById("show-organs");
  const markButton = document.getElementById("mark-mode");
  const base = "/viewer/jobs/" + cfg.jobId;
  const organNumbers = Array.from(document.querySelectorAll(".finding.kind-organ"))
    .map((li) => Number(li.dataset.number));
  const allNumbers = Array.from(document.querySelectorAll(".finding"))
    .map((li) => Number(li.dataset.number));

  let k = cfg.start;
  let wc = cfg.window[0];
  let ww = cfg.window[1];
  let marking = false;
  let pending = null;

  slider.max = String(cfg.slices - 1);
  marksSvg.setAttribute("viewBox", "0 0 " + cfg.cols + " " + cfg.rows);

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function overlayQuery() {
    if (organs && !organs.checked) {
      const shown = allNumbers.filter((n) => !organNumbers.includes(n));
      return "?segments=" + shown.join(",");
    }
    return "";
  }

  function sliceUrl(i) {
    return base + "/slices/" + i + ".png?wc=" + Math.round(wc) + "&ww=" + Math.round(ww);
  }

  function drawMarks() {
    while (marksSvg.firstChild) marksSvg.removeChild(marksSvg.firstChild);
    for (const m of cfg.marks) {
      if (m.slice_index !== k) continue;
      const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      c.setAttribute("cx", m.x);
      c.setAttribute("cy", m.y);
      c.setAttribute("r", Math.max(6, cfg.cols / 60));
      c.setAttribute("class", "mark");
      marksSvg.appendChild(c);
    }
  }

  function show() {
    slice.src = sliceUrl(k);
    overlay.src = base + "/overlay/" + k + ".png" + overlayQuery();
    slider.value = String(k);
    // Slice number = index + 1, the one rule of medvision.findings._slices.
    label.textContent = "slice " + (k + 1) + " / " + cfg.slices;
    wlLabel.textContent = "W " + Math.round(ww) + " / L " + Math.round(wc);
    drawMarks();
    stage.dataset.slice = String(k);
    // Warm the browser cache for the neighbours, so scrolling feels immediate.
    for (const d of [1, -1]) {
      const n = k + d;
      if (n >= 0 && n < cfg.slices) new Image().src = sliceUrl(n);
    }
  }

  function go(i) {
    const next = Math.min(cfg.slices - 1, Math.max(0, i));
    if (next !== k) {
      k = next;
      show();
    }
  }

  stage.addEventListener("wheel", (e) => {
    e.preventDefault();
    go(k + (e.deltaY > 0 ? 1 : -1));
  }, { passive: false });

  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement && e.target.type !== "range") return;
    const step = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -5, PageDown: 5 }[e.key];
    if (step !== undefined) {
      e.preventDefault();
      go(k + step);
    } else if (e.key === "Home") {
      go(0);
    } else if (e.key === "End") {
      go(cfg.slices - 1);
    }
  });

  slider.addEventListener("input", () => go(Number(slider.value)));

  for (const b of document.querySelectorAll(".preset")) {
    b.addEventListener("click", () => {
      [wc, ww] = cfg.presets[b.dataset.preset];
      show();
    });
  }

  // Drag with the left button: left/right changes the width, up/down the level.
  let drag = null;
  stage.addEventListener("mousedown", (e) => {
    if (marking || e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, wc: wc, ww: ww };
    e.preventDefault();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    ww = Math.max(1, drag.ww + (e.clientX - drag.x) * 4);
    wc = drag.wc + (e.clientY - drag.y) * 2;
    wlLabel.textContent = "W " + Math.round(ww) + " / L " + Math.round(wc);
    if (!pending) {
      pending = setTimeout(() => { pending = null; slice.src = sliceUrl(k); }, 60);
    }
  });
  window.addEventListener("mouseup", () => {
    if (drag) {
      drag = null;
      show();
    }
  });

  opacity.addEventListener("input", () => {
    overlay.style.opacity = String(Number(opacity.value) / 100);
  });
  overlay.style.opacity = String(Number(opacity.value) / 100);
  if (organs) organs.addEventListener("change", show);

  for (const li of document.querySelectorAll(".finding")) {
    const goto = li.querySelector(".goto");
    if (goto) goto.addEventListener("click", () => go(Number(li.dataset.slice)));
    for (const b of li.querySelectorAll("button[data-decision]")) {
      b.addEventListener("click", () => review(li, b.dataset.decision));
    }
  }

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    if (!r.ok) {
      const detail = data && data.detail ? (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)) : r.statusText;
      throw new Error(r.status + " " + detail);
    }
    return data;
  }

  async function review(li, decision) {
    const input = li.querySelector(".comment");
    const comment = input ? input.value.trim() : "";
    if (decision === "comment" && !comment) {
      say("Write a comment first.", true);
      return;
    }
    try {
      await post("/findings/" + cfg.jobId + "/" + li.dataset.number + "/feedback", { decision, comment });
      const shown = li.querySelector(".decision");
      if (decision !== "comment") {
        shown.textContent = decision + "ed by you";
        shown.dataset.decision = decision;
      }
      if (input) input.value = "";
      say("Recorded: " + decision + " on finding " + li.dataset.number + ".");
    } catch (err) {
      say("Not recorded: " + err.message, true);
    }
  }

  if (markButton) {
    markButton.addEventListener("click", () => {
      marking = !marking;
      markButton.setAttribute("aria-pressed", String(marking));
      stage.classList.toggle("marking", marking);
      say(marking ? "Click on the image where the missed lesion is." : "");
    });
  }

  stage.addEventListener("click", async (e) => {
    if (!marking) return;
    const box = slice.getBoundingClientRect();
    const x = Math.round(((e.clientX - box.left) / box.width) * cfg.cols * 10) / 10;
    const y = Math.round(((e.clientY - box.top) / box.height) * cfg.rows * 10) / 10;
    if (x < 0 || y < 0 || x >= cfg.cols || y >= cfg.rows) return;
    try {
      const saved = await post("/studies/" + encodeURIComponent(cfg.studyUid) + "/missed-lesions",
        { slice_index: k, x, y, job_id: cfg.jobId });
      cfg.marks.push({ slice_index: k, x, y, id: saved && saved.id });
      const list = document.getElementById("mark-list");
      const none = list.querySelector(".none");
      if (none) none.remove();
      const item = document.createElement("li");
      item.textContent = "slice " + (k + 1) + ", by you";
      list.appendChild(item);
      drawMarks();
      say("Missed lesion marked on slice " + (k + 1) + ".");
    } catch (err) {
      say("Not recorded: " + err.message, true);
    }
    marking = false;
    markButton.setAttribute("aria-pressed", "false");
    stage.classList.remove("marking");
  });

  show();
  stage.focus();
})();
