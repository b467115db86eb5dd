/* Room display over MQTT-over-WebSocket (mqtt.js). Protocol: docs/protocol.md (schema v1, revision 4).
   Caption text is only ever set with textContent: it is never parsed as HTML. */
"use strict";
(function () {
  var SCHEMA_VERSION = 1, MAX_TEXT = 1000, REMEMBER = 2000;
  var q = new URLSearchParams(window.location.search);
  var room = q.get("room") || "room1";
  var lang = q.get("lang") || "en";
  var prefix = q.get("prefix") || "appliance";
  var rowsN = Math.max(1, Math.min(4, parseInt(q.get("rows") || "2", 10) || 2));
  var width = Math.max(10, Math.min(120, parseInt(q.get("width") || "42", 10) || 42));
  // roll-up: finals that scrolled off stay above as dimmed history; text is revealed at a reading speed
  var histN = Math.max(0, Math.min(10, parseInt(q.get("history") || "3", 10)));
  if (isNaN(histN)) histN = 3;
  var cps = Math.max(5, Math.min(100, parseFloat(q.get("cps") || "17") || 17)); // characters per second
  var CATCHUP_S = 4, BURST_CHARS = 8, TICK_MS = 50, LINES_KEPT = 80;
  var host = window.location.hostname || "127.0.0.1";
  var broker = q.get("broker") || ((window.location.protocol === "https:" ? "wss://" : "ws://") + host + ":9001");
  var base = prefix + "/" + room;
  var topicCaptions = base + "/captions/" + lang, topicStatus = base + "/status", topicDetail = base + "/status/detail";

  var captionsEl = document.getElementById("captions");
  var qr = q.get("qr"), qrEl = null; // e.g. /audience/qr.svg?room=room1: the audience page's QR code, from this server only
  if (qr && qr.charAt(0) === "/" && qr.charAt(1) !== "/") {
    qrEl = document.createElement("img");
    qrEl.className = "qr"; qrEl.id = "qr"; qrEl.alt = "Captions on your phone"; qrEl.src = qr;
    document.body.appendChild(qrEl);
  }
  var historyEl = document.getElementById("history");
  var bannerEl = document.getElementById("banner");
  var infoEl = document.getElementById("info");
  document.documentElement.lang = lang;
  var rowEls = [];
  for (var i = 0; i < rowsN; i++) {
    var d = document.createElement("div");
    d.className = "row";
    captionsEl.appendChild(d);
    rowEls.push(d);
  }

  // ---- state: the same rules as appliance/bus/client.py CaptionState --------------------------------------
  // lines: revealed final text [{id, text, open, label, sp}]; pending: finals still to reveal [{id, words, label, sp}]
  // label: the speaker's name (or id) on the first line of a final whose speaker differs from the previous final's;
  // sp: the speaker's colour index (null: speaker unknown); lastSpeaker: id of the last final's known speaker
  var state = { lines: [], pending: [], partial: null, lastFinalSeq: -1, seen: new Map(), finals: 0, duplicates: 0,
                stale: 0, malformed: 0, revealed: [], cps: cps, lastSpeaker: null };
  window.captionDisplay = state; // for tests and debugging

  function wrap(text) {
    var words = String(text).split(/\s+/).filter(Boolean), lines = [], cur = "";
    words.forEach(function (w) {
      while (w.length > width) { if (cur) { lines.push(cur); cur = ""; } lines.push(w.slice(0, width)); w = w.slice(width); }
      if (!w) return;
      if (!cur) cur = w; else if (cur.length + 1 + w.length <= width) cur += " " + w; else { lines.push(cur); cur = w; }
    });
    if (cur) lines.push(cur);
    return lines;
  }
  function linesOf(m) {
    if (Array.isArray(m.lines) && m.lines.length && m.lines.every(function (x) { return typeof x === "string"; })) {
      return m.lines.filter(function (x) { return x.trim(); });
    }
    return wrap(m.text);
  }
  // ---- speakers: a change of speaker starts a line with the name (or id), in the speaker's colour -------------
  var SPEAKER_COLOURS = 6, MAX_NAME = 60;
  function speakerOf(m) {
    var s = m.speaker;
    if (!s || typeof s !== "object" || typeof s.id !== "string" || !s.id) return null;
    var name = typeof s.name === "string" && s.name.trim() ? s.name.slice(0, MAX_NAME) : null;
    return { id: s.id.slice(0, 64), name: name };
  }
  function colourOf(id) {
    var n = parseInt(id.replace(/\D/g, ""), 10);
    if (!Number.isFinite(n)) { n = 0; for (var i = 0; i < id.length; i++) n = (n * 31 + id.charCodeAt(i)) >>> 0; }
    return n % SPEAKER_COLOURS;
  }
  function turnOf(m) { // {id, label, sp, src}: label only where the speaker differs from the last final's
    var sp = speakerOf(m);
    return { id: m.id, label: sp && sp.id !== state.lastSpeaker ? (sp.name || sp.id) : null, sp: sp ? colourOf(sp.id) : null,
             src: sourceOf(m) };
  }
  // ---- untranslated: a final whose text is the source text (no translation agreed with it) is shown in another
  // colour, its first line marked with the language it is in ("[EN] ", counted in the width like a speaker's name)
  function sourceOf(m) {
    return m.final && m.untranslated === true ? String(m.source_lang || "?").slice(0, 8).toUpperCase() : null;
  }
  function remember(key) {
    state.seen.set(key, true);
    while (state.seen.size > REMEMBER) state.seen.delete(state.seen.keys().next().value);
  }
  function parse(payload) {
    var m;
    try { m = JSON.parse(payload.toString()); } catch (e) { return fail("not JSON"); }
    if (!m || typeof m !== "object" || Array.isArray(m)) return fail("not an object");
    if (!Number.isInteger(m.v) || m.v > SCHEMA_VERSION) return fail("unsupported schema version " + m.v);
    if (!Number.isInteger(m.seq)) return fail("no integer seq");
    if (typeof m.id !== "string" && typeof m.id !== "number") return fail("no id");
    if (typeof m.text !== "string") return fail("no string text");
    if (typeof m.final !== "boolean") return fail("no boolean final");
    m.id = String(m.id); m.rev = Number.isFinite(m.rev) ? m.rev : 0; m.text = m.text.slice(0, MAX_TEXT);
    return m;
  }
  function fail(why) { state.malformed++; console.warn("caption display: ignored a malformed message: " + why); return null; }

  function accept(m) {
    var key = m.id + "\u0000" + m.rev;
    if (m.final) {
      if (m.seq <= state.lastFinalSeq || state.seen.has(key)) { state.duplicates++; return false; }
      state.lastFinalSeq = m.seq;
      remember(key); remember(m.id + "\u0000final");
      state.finals++;
      queueFinal(m, turnOf(m));
      var sp = speakerOf(m);
      if (sp) state.lastSpeaker = sp.id;
      return true;
    }
    if (state.seen.has(m.id + "\u0000final") || m.seq < state.lastFinalSeq) { state.stale++; return false; }
    var p = state.partial;
    if (p && p.id === m.id && (m.rev < p.rev || (m.rev === p.rev && m.seq <= p.seq))) { state.stale++; return false; }
    state.partial = m;
    return true;
  }
  // ---- reveal: finals appear word by word at <= cps (faster only when the backlog would lag > CATCHUP_S) ----
  function norm(w) { return w.toLowerCase().replace(/[^\p{L}\p{N}]/gu, ""); }
  function queueFinal(m, turn) {
    var words = String(m.text).split(/\s+/).filter(Boolean);
    var p = state.partial, shown = 0;
    if (p && p.id === m.id && !state.pending.length) { // words already on screen as the partial: no replay
      var pw = String(p.text).split(/\s+/).filter(Boolean);
      while (shown < words.length && shown < pw.length && norm(words[shown]) === norm(pw[shown])) shown++;
    }
    if (p && p.id === m.id) state.partial = null;
    words.slice(0, shown).forEach(function (w) { addWord(state.lines, turn, w); });
    state.pending.push({ id: m.id, words: words.slice(shown), label: turn.label, sp: turn.sp, src: turn.src });
  }
  function used(line) { // "[EN] " and "Name: " count
    return (line.mark ? line.mark.length + 3 : 0) + (line.label ? line.label.length + 2 : 0) + line.text.length;
  }
  function addWord(lines, f, w) { // f: {id, label, sp, src}; the final's first line carries its marks
    var last = lines[lines.length - 1], line = last && last.id === f.id && last.open ? last : null;
    if (!line) line = startLine(lines, f, !(last && last.id === f.id));
    for (;;) {
      var room = width - used(line) - (line.text ? 1 : 0);
      if (w.length <= room) { line.text += (line.text ? " " : "") + w; break; }
      if (!line.text && room > 0 && w.length > width) { // as wrap(): a word longer than a line is cut into pieces
        line.text = w.slice(0, room);
        w = w.slice(room);
      }
      line.open = false;
      line = startLine(lines, f, false);
    }
    if (lines.length > LINES_KEPT) lines.splice(0, lines.length - LINES_KEPT);
  }
  function startLine(lines, f, labelled) {
    var line = { id: f.id, text: "", open: true, label: labelled ? f.label : null, sp: f.sp, src: f.src || null,
                 mark: labelled ? f.src || null : null };
    lines.push(line);
    return line;
  }
  function backlog() {
    return state.pending.reduce(function (n, f) { return n + f.words.reduce(function (a, w) { return a + w.length + 1; }, 0); }, 0);
  }
  var credit = BURST_CHARS, lastTick = Date.now();
  function tick() {
    var now = Date.now(), dt = (now - lastTick) / 1000;
    lastTick = now;
    var waiting = backlog();
    if (!waiting) { credit = Math.min(BURST_CHARS, credit + dt * cps); return; }
    credit += dt * Math.max(cps, waiting / CATCHUP_S);
    var changed = false;
    while (state.pending.length) {
      var head = state.pending[0];
      if (!head.words.length) { state.pending.shift(); changed = true; continue; }
      var cost = head.words[0].length + 1;
      if (credit < cost) break;
      credit -= cost;
      addWord(state.lines, head, head.words.shift());
      state.revealed.push([now, cost]);
      if (state.revealed.length > 500) state.revealed.shift();
      changed = true;
    }
    if (changed) render();
  }
  setInterval(tick, TICK_MS);

  function partialLines(m) { // a change of speaker: the label counts in the width, as on the final's lines
    var turn = turnOf(m);
    if (!turn.label) return linesOf(m).map(function (t) { return { id: m.id, text: t, label: null, sp: turn.sp, src: null }; });
    var lines = [];
    String(m.text).split(/\s+/).filter(Boolean).forEach(function (w) { addWord(lines, turn, w); });
    return lines;
  }
  function render() {
    var view = state.lines.map(function (l) {
      return { text: l.text, partial: false, id: l.id, label: l.label, sp: l.sp, src: l.src, mark: l.mark };
    });
    if (state.partial && !state.pending.length) { // a partial only once the finals before it are out
      view = view.concat(partialLines(state.partial).map(function (l) {
        return { text: l.text, partial: true, id: l.id, label: l.label, sp: l.sp };
      }));
    }
    var live = view.slice(-rowsN), older = view.slice(0, Math.max(0, view.length - rowsN));
    while (live.length < rowsN) live.unshift({ text: "", partial: false, id: null, label: null, sp: null, src: null });
    live.forEach(function (r, i) { fill(rowEls[i], r, r.partial ? "row partial" : "row"); });
    renderHistory(older, live);
  }
  function fill(el, r, cls) { // text, never HTML: the speaker's name in its own span, then the words
    el.textContent = ""; // an untranslated final's mark is CSS (::before from data-source): the text stays the text
    if (r.label) {
      var label = document.createElement("span");
      label.className = "speaker";
      label.textContent = r.label + ": ";
      el.appendChild(label);
    }
    el.appendChild(document.createTextNode(r.text));
    el.className = cls + (r.sp === null || r.sp === undefined ? "" : " sp" + r.sp) + (r.src ? " untranslated" : "");
    if (r.mark) el.dataset.source = r.mark; else delete el.dataset.source;
  }
  function renderHistory(older, live) {
    // the lines above the live rows, from the last histN finals (counting one still partly live); older = dimmer
    var ids = [], keep = [];
    for (var i = older.length - 1; i >= 0; i--) {
      var id = older[i].id;
      if (ids.indexOf(id) < 0) { if (ids.length >= histN) break; ids.push(id); }
      keep.unshift(older[i]);
    }
    var liveIds = live.map(function (r) { return r.id; });
    while (historyEl.childNodes.length > keep.length) historyEl.removeChild(historyEl.firstChild);
    while (historyEl.childNodes.length < keep.length) historyEl.insertBefore(document.createElement("div"), historyEl.firstChild);
    keep.forEach(function (r, j) {
      var age = ids.indexOf(r.id) + (liveIds.indexOf(r.id) >= 0 ? 0 : 1); // 0: the final still on the live rows
      fill(historyEl.childNodes[j], r, "hist age-" + age);
    });
  }
  function banner(text, kind) {
    if (!text) { bannerEl.hidden = true; bannerEl.textContent = ""; return; }
    bannerEl.textContent = text;
    bannerEl.className = "banner " + (kind || "");
    bannerEl.hidden = false;
  }

  // ---- connection ------------------------------------------------------------------------------------------
  if (typeof mqtt === "undefined") {
    banner("mqtt.js is missing: run scripts/web-assets (scripts/setup does it)", "");
    return;
  }
  var idKey = "captionDisplayClientId:" + base + ":" + lang, clientId;
  try { clientId = window.localStorage.getItem(idKey); } catch (e) { clientId = null; }
  if (!clientId) {
    clientId = "web-" + room + "-" + lang + "-" + Math.random().toString(16).slice(2, 10);
    try { window.localStorage.setItem(idKey, clientId); } catch (e) { /* file:// without storage */ }
  }
  var roomStatus = null, connected = false;
  function updateBanner() {
    if (!connected) banner("Connecting to the caption server…", "connecting");
    else if (roomStatus === "offline") banner("Captions offline", "");
    else if (roomStatus === null) banner("Waiting for the room to come online…", "connecting");
    else banner(null);
  }
  updateBanner();
  infoEl.textContent = room + " · " + lang;
  // Served by the display server: connection.json gives the broker's WebSocket port and the room's read-only
  // user. Opened from disk (or with ?broker=): the query parameters say where and who.
  if (q.get("broker") || window.location.protocol === "file:") {
    connect(broker, q.get("username") || undefined, q.get("password") || undefined);
  } else {
    fetch("connection.json", { cache: "no-store", credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (c) {
        var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
        showCode(c.meeting_code);
        connect(scheme + (c.ws_host || host) + ":" + c.ws_port, c.username || undefined, c.password || undefined);
        setInterval(refreshCode, 15000); // a new meeting makes a new code: phones need the one shown now
      })
      .catch(function (err) {
        banner("Cannot get the caption server's details: " + err.message + " (retrying)", "");
        setTimeout(function () { window.location.reload(); }, 5000);
      });
  }

  // The meeting code (connection.json, served to this page only): shown in the room, and in the QR code's link.
  function showCode(code) {
    if (!code) return;
    var el = document.getElementById("meeting-code");
    if (!el) { el = document.createElement("div"); el.id = "meeting-code"; el.className = "meeting-code"; document.body.appendChild(el); }
    el.textContent = "Meeting code " + code;
    if (qrEl) qrEl.src = qr + (qr.indexOf("?") < 0 ? "?" : "&") + "code=" + encodeURIComponent(code);
  }
  function refreshCode() {
    fetch("connection.json", { cache: "no-store", credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : {}; }).then(function (c) { showCode(c.meeting_code); })
      .catch(function () {});
  }

  function connect(url, username, password) {
  var client = mqtt.connect(url, {
    clientId: clientId, protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 },
    reconnectPeriod: 1000, connectTimeout: 5000, keepalive: 30,
    username: username, password: password
  });
  client.on("error", function (err) {
    // refused (bad user or password: rotated in the panel): fetch the connection details again
    if (err && (err.code === 134 || err.code === 135 || err.code === 4 || err.code === 5) &&
        !q.get("broker") && window.location.protocol !== "file:") {
      client.end(true);
      banner("The caption server refused this display: reloading its details…", "connecting");
      setTimeout(function () { window.location.reload(); }, 2000);
    }
  });
  client.on("connect", function () {
    connected = true;
    client.subscribe([topicCaptions, topicStatus], { qos: 1 });
    client.subscribe(topicDetail, { qos: 0 });
    updateBanner();
  });
  client.on("close", function () { connected = false; updateBanner(); });
  client.on("offline", function () { connected = false; updateBanner(); });
  client.on("error", function (err) { console.warn("caption display: " + (err && err.message)); });
  client.on("message", function (topic, payload) {
    try {
      if (topic === topicStatus) {
        var s = payload.toString().trim();
        if (s === "online" || s === "offline") roomStatus = s; else console.warn("caption display: unknown status ignored");
        updateBanner();
      } else if (topic === topicDetail) {
        var d = JSON.parse(payload.toString());
        if (d && typeof d.name === "string") infoEl.textContent = d.name + " · " + lang;
      } else if (topic === topicCaptions) {
        var m = parse(payload);
        if (m && accept(m)) render();
      }
    } catch (e) {
      state.malformed++;
      console.warn("caption display: ignored a message on " + topic + ": " + e);
    }
  });
  }
})();
