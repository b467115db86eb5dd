/* Room display over MQTT-over-WebSocket (mqtt.js). Protocol: docs/protocol.md (schema v1).
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
  var host = window.location.hostname || "127.0.0.1";
  var broker = q.get("broker") || ((window.location.protocol === "https:" ? "wss://" : "ws://") + host + ":9001");
  var base = prefix + "/" + room;
  var topicCaptions = base + "/captions/" + lang, topicStatus = base + "/status", topicDetail = base + "/status/detail";

  var captionsEl = document.getElementById("captions");
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
  var state = { finalLines: [], partial: null, lastFinalSeq: -1, seen: new Map(), finals: 0, duplicates: 0, stale: 0, malformed: 0 };
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
      // rows of finals: [text, source language when the text is untranslated source text (shown marked), else ""]
      var src = m.untranslated === true ? String(m.source_lang || "?").slice(0, 8) : "";
      state.finalLines = state.finalLines.concat(linesOf(m).map(function (t) { return [t, src]; })).slice(-rowsN);
      if (state.partial && state.partial.id === m.id) state.partial = null;
      return true;
    }
    if (state.seen.has(m.id + "\u0000final") || m.seq < state.lastFinalSeq) { state.stale++; return false; }
    var p = state.partial;
    if (p && p.id === m.id && (m.rev < p.rev || (m.rev === p.rev && m.seq <= p.seq))) { state.stale++; return false; }
    state.partial = m;
    return true;
  }
  function render() {
    var rows = state.finalLines.map(function (f) { return [f[0], false, f[1]]; });
    if (state.partial) rows = rows.concat(linesOf(state.partial).map(function (t) { return [t, true, ""]; }));
    rows = rows.slice(-rowsN);
    while (rows.length < rowsN) rows.unshift(["", false, ""]);
    rows.forEach(function (r, i) {
      rowEls[i].textContent = r[0]; // text, never HTML
      rowEls[i].className = r[1] ? "row partial" : (r[2] ? "row untranslated" : "row");
      if (r[2]) rowEls[i].dataset.source = r[2].toUpperCase(); else delete rowEls[i].dataset.source;
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
    banner("mqtt.js is missing: run scripts/setup (npm ci in appliance/display/web)", "");
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
  var client = mqtt.connect(broker, {
    clientId: clientId, protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 600 },
    reconnectPeriod: 1000, connectTimeout: 5000, keepalive: 30,
    username: q.get("username") || undefined, password: q.get("password") || undefined
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
})();
