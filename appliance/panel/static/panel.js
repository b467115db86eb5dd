// Config panel behaviour. Loaded as a file (the CSP allows no inline script); text is set with textContent only.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function getStatus() {
    return fetch("/api/status", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("status " + r.status); } return r.json(); });
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
    return el;
  }

  function fmt(v, digits, unit) {
    return (v === null || v === undefined) ? "—" : Number(v).toFixed(digits) + (unit || "");
  }

  // "Saving…" while a form posts; then the apply bar shows "applying…" until the daemon has the change.
  document.querySelectorAll("form[data-save]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var b = form.querySelector("button[type=submit]");
      if (b) { b.disabled = true; b.textContent = b.getAttribute("data-busy") || "Saving…"; }
    });
  });

  var apply = document.getElementById("apply-state");
  function showApply(a, now) {
    if (!apply || !a) { return; }
    apply.setAttribute("data-state", a.state);
    var stale = a.state === "applied" && now && now - a.at > 15;  // success notices fade; failures stay
    apply.textContent = (a.state === "idle" || stale) ? "" : a.message;
  }
  function pollApply() {
    if (!apply || apply.getAttribute("data-state") !== "applying") { return; }
    getStatus().then(function (s) { showApply(s.apply, s.now); }).catch(function () {}).then(function () {
      if (apply.getAttribute("data-state") === "applying") { setTimeout(pollApply, 700); }
    });
  }
  pollApply();

  // Microphone page: live input level.
  if (document.querySelector("[data-poll-level]")) {
    var meter = document.getElementById("level");
    (function level() {
      getStatus().then(function (s) {
        var i = s.input || {};
        meter.value = i.level || 0;
        text("level-text", i.level === null || i.level === undefined ? "no audio" :
             fmt(i.rms_dbfs, 1, " dBFS RMS") + ", peak " + fmt(i.peak_dbfs, 1, " dBFS"));
        var m = s.microphone || {};
        text("mic-state", m.state + (m.detail ? " (" + m.detail + ")" : ""));
      }).catch(function () { text("level-text", "status unavailable"); })
        .then(function () { setTimeout(level, 300); });
    })();
  }

  // Live page.
  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (c) { var td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    return tr;
  }
  function renderLive(s) {
    var h = text("live-health", s.healthy ? "healthy" : "unhealthy: " + (s.problems || []).join("; "));
    if (h) { h.setAttribute("data-healthy", String(!!s.healthy)); }
    text("live-uptime", Math.floor(s.uptime_s) + " s");
    text("live-rtf", fmt(s.pipeline.rtf, 2));
    text("live-broker", s.broker.state + (s.broker.detail ? " (" + s.broker.detail + ")" : ""));
    text("live-mic", s.microphone.state + (s.microphone.detail ? " (" + s.microphone.detail + ")" : ""));
    text("live-counts", s.pipeline.finals + " / " + s.pipeline.partials);
    text("live-skipped", String(s.pipeline.partials_skipped));
    text("live-providers", (s.providers || []).join(", ") || "—");
    var tbody = document.querySelector("#live-latency tbody");
    if (tbody) {
      tbody.replaceChildren();
      Object.keys(s.latency || {}).forEach(function (stage) {
        var l = s.latency[stage];
        tbody.appendChild(row([stage, fmt(l.p50, 2, " s"), fmt(l.p95, 2, " s"), String(l.count)]));
      });
      if (!tbody.children.length) { tbody.appendChild(row(["No measurements yet.", "", "", ""])); }
    }
    var caps = document.getElementById("live-captions");
    if (caps) {
      caps.replaceChildren();
      var langs = Object.keys(s.captions || {});
      if (!langs.length) { var p = document.createElement("p"); p.className = "muted"; p.textContent = "No captions yet."; caps.appendChild(p); }
      langs.forEach(function (lang) {
        var sec = document.createElement("section"); sec.className = "captions";
        var h3 = document.createElement("h3"); h3.textContent = lang; sec.appendChild(h3);
        var ol = document.createElement("ol");
        (s.captions[lang].finals || []).forEach(function (f) { var li = document.createElement("li"); li.textContent = f.text; ol.appendChild(li); });
        var part = s.captions[lang].partial;
        if (part) { var li = document.createElement("li"); li.className = "partial"; li.textContent = part.text; ol.appendChild(li); }
        sec.appendChild(ol); caps.appendChild(sec);
      });
    }
    var msgs = document.getElementById("live-messages");
    if (msgs) {
      msgs.replaceChildren();
      (s.messages || []).forEach(function (m) {
        var li = document.createElement("li"); li.className = m.level;
        li.textContent = m.text + (m.count > 1 ? " (×" + m.count + ")" : ""); msgs.appendChild(li);
      });
      if (!(s.messages || []).length) { var li = document.createElement("li"); li.className = "muted"; li.textContent = "None."; msgs.appendChild(li); }
    }
    showApply(s.apply, s.now);
  }
  if (document.querySelector("[data-poll-live]")) {
    (function live() {
      getStatus().then(renderLive).catch(function () {}).then(function () { setTimeout(live, 1000); });
    })();
  }

  // Exposed for scripts that talk to the JSON API from this page (the token is also in the meta tag).
  window.appliancePanel = { csrf: csrf };
})();
