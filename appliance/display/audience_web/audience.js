/* Audience page: scroll-back from the archive (api/captions), then live captions over MQTT-over-WebSocket.
   Caption text is only ever set with textContent. Settings (language, size, theme) stay in localStorage. */
"use strict";
(function () {
  var SIZES = [16, 18, 20, 24, 28, 34, 40], MAX_TEXT = 1000, MAX_SHOWN = 3000;
  var q = new URLSearchParams(window.location.search);
  var room = q.get("room") || "room1", prefix = q.get("prefix") || "appliance";
  var host = window.location.hostname || "127.0.0.1";
  var broker = q.get("broker") || ((window.location.protocol === "https:" ? "wss://" : "ws://") + host + ":9001");
  var base = prefix + "/" + room;
  var store = {
    get: function (k, d) { try { var v = window.localStorage.getItem("audience:" + k); return v === null ? d : v; } catch (e) { return d; } },
    set: function (k, v) { try { window.localStorage.setItem("audience:" + k, String(v)); } catch (e) { /* private mode */ } }
  };
  var lang = store.get("lang", q.get("lang") || "en"); // the reader's own choice wins over the link's default
  var logEl = document.getElementById("log"), partialEl = document.getElementById("partial");
  var langEl = document.getElementById("lang"), bannerEl = document.getElementById("banner");
  var jumpEl = document.getElementById("jump");
  var state = { lang: lang, shown: new Map(), finals: 0, history: 0, languages: [], loading: null };
  window.audience = state; // for tests and debugging

  // ---- settings ---------------------------------------------------------------------------------------------
  var sizeIdx = Math.max(0, Math.min(SIZES.length - 1, parseInt(store.get("size", "2"), 10) || 2));
  function applySize() { document.body.style.setProperty("--size", SIZES[sizeIdx] + "px"); store.set("size", sizeIdx); }
  document.getElementById("smaller").onclick = function () { sizeIdx = Math.max(0, sizeIdx - 1); applySize(); };
  document.getElementById("bigger").onclick = function () { sizeIdx = Math.min(SIZES.length - 1, sizeIdx + 1); applySize(); };
  var theme = store.get("theme", window.matchMedia && window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
  function applyTheme() { document.body.dataset.theme = theme; store.set("theme", theme); }
  document.getElementById("theme").onclick = function () { theme = theme === "dark" ? "light" : "dark"; applyTheme(); };
  applySize(); applyTheme();

  function languages(list) {
    list.forEach(function (l) { if (typeof l === "string" && /^[a-z]{2,3}$/.test(l) && state.languages.indexOf(l) < 0) state.languages.push(l); });
    if (state.languages.indexOf(state.lang) < 0) state.languages.unshift(state.lang);
    var names = typeof Intl !== "undefined" && Intl.DisplayNames ? new Intl.DisplayNames([navigator.language || "en"], { type: "language" }) : null;
    langEl.textContent = "";
    state.languages.forEach(function (l) {
      var o = document.createElement("option");
      o.value = l;
      o.textContent = names ? (names.of(l) || l) + " (" + l + ")" : l;
      o.selected = l === state.lang;
      langEl.appendChild(o);
    });
  }

  // ---- captions -------------------------------------------------------------------------------------------------
  function nearBottom() { return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80; }
  function speakerName(s) {
    if (s === null || s === undefined || s === "") return "";
    if (typeof s === "object") return String(s.name || s.label || s.id || "");
    return String(s);
  }
  function show(f, before) {
    var follow = nearBottom(), id = String(f.id), p = state.shown.get(id);
    if (!p) {
      p = document.createElement("p");
      p.dataset.id = id;
      logEl.insertBefore(p, before || null); // scroll-back goes before live finals that came in meanwhile
      state.shown.set(id, p);
      while (state.shown.size > MAX_SHOWN) {
        var first = state.shown.keys().next().value;
        state.shown.get(first).remove();
        state.shown.delete(first);
      }
    }
    p.textContent = "";
    var who = speakerName(f.speaker);
    if (who) { var b = document.createElement("span"); b.className = "who"; b.textContent = who + ":"; p.appendChild(b); }
    p.appendChild(document.createTextNode(String(f.text).slice(0, MAX_TEXT)));
    if (follow) window.scrollTo(0, document.body.scrollHeight); else jumpEl.hidden = false;
  }
  jumpEl.onclick = function () { jumpEl.hidden = true; window.scrollTo(0, document.body.scrollHeight); };
  window.addEventListener("scroll", function () { if (nearBottom()) jumpEl.hidden = true; });

  function loadHistory() {
    var want = state.lang;
    state.loading = fetch("api/captions?lang=" + encodeURIComponent(want) + "&code=" + encodeURIComponent(q.get("code") || ""), { cache: "no-store" })
      .then(function (r) { return r.json().then(function (body) { return [r.ok, body]; }); })
      .then(function (res) {
        if (want !== state.lang) return;
        var body = res[1];
        if (Array.isArray(body.languages)) languages(body.languages);
        if (!res[0]) { console.warn("audience: " + body.error); return; }
        var firstLive = logEl.firstChild;
        body.finals.forEach(function (f) { if (!state.shown.has(String(f.id))) { show(f, firstLive); state.history++; } });
        window.scrollTo(0, document.body.scrollHeight);
      })
      .catch(function (e) { console.warn("audience: scroll-back unavailable: " + e); });
  }

  // ---- live -------------------------------------------------------------------------------------------------------
  var client = null, topic = null;
  function banner(text) { bannerEl.hidden = !text; bannerEl.textContent = text || ""; }
  function subscribe() {
    if (!client) return;
    if (topic) client.unsubscribe(topic);
    topic = base + "/captions/" + state.lang;
    client.subscribe(topic, { qos: 1 }, function (err, granted) { // live once the broker granted it
      if (err || (granted && granted[0] && granted[0].qos >= 128)) banner("Live captions refused by the caption server");
      else banner(null);
    });
  }
  function onMessage(t, payload) {
    var m;
    try { m = JSON.parse(payload.toString()); } catch (e) { return; }
    if (t === base + "/status/detail") { if (m && Array.isArray(m.languages)) languages(m.languages); return; }
    if (t !== topic || !m || typeof m.text !== "string" || typeof m.final !== "boolean" || m.lang !== state.lang) return;
    if (m.final) {
      partialEl.textContent = "";
      if (m.text.trim()) { show(m); state.finals++; }
      else if (state.shown.has(String(m.id))) { state.shown.get(String(m.id)).remove(); state.shown.delete(String(m.id)); }
    } else {
      partialEl.textContent = m.text.slice(0, MAX_TEXT);
    }
  }
  langEl.onchange = function () {
    state.lang = langEl.value;
    store.set("lang", state.lang);
    document.documentElement.lang = state.lang;
    logEl.textContent = ""; partialEl.textContent = ""; state.shown.clear(); state.history = 0; state.finals = 0;
    subscribe();
    loadHistory();
  };
  document.documentElement.lang = state.lang;
  languages([]);
  loadHistory();
  if (typeof mqtt === "undefined") { banner("Live captions unavailable (mqtt.js missing)"); return; }
  // Served by the display server: its connection.json gives the broker's WebSocket port and the room's read-only
  // user (the broker is closed to anonymous clients). With ?broker= or from disk: the query parameters.
  function connect(url, username, password) {
    client = mqtt.connect(url, { reconnectPeriod: 1000, connectTimeout: 5000, keepalive: 30, clean: true,
                                 username: username, password: password });
    client.on("connect", function () { client.subscribe(base + "/status/detail", { qos: 0 }); subscribe(); });
    client.on("offline", function () { banner("Reconnecting…"); });
    client.on("message", onMessage);
  }
  banner("Connecting…"); // until the captions subscription is granted: no live caption is missed unseen
  if (q.get("broker") || window.location.protocol === "file:") {
    connect(broker, q.get("username") || undefined, q.get("password") || undefined);
  } else {
    fetch("../display/connection.json", { cache: "no-store", credentials: "omit" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (c) {
        var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
        connect(scheme + (c.ws_host || host) + ":" + c.ws_port, c.username || undefined, c.password || undefined);
      })
      .catch(function (err) { banner("Live captions unavailable: " + err.message); });
  }
})();
