// SIP edge settings form (security page): builds the JSON body of
// PUT /api/v1/sip/settings from the per-field controls and sends it with
// the session's CSRF token. Durations are edited in seconds and sent in
// nanoseconds (Go's time.Duration); lists are one entry per line.
"use strict";
(function () {
  var form = document.getElementById("sip-edit");
  if (!form) return;
  var NS = 1e9;
  function el(name) { return form.elements.namedItem(name); }
  function num(name) { return Number(el(name).value); }
  function secs(name) { return Math.round(Number(el(name).value) * NS); }
  function lines(name) {
    return el(name).value.split("\n").map(function (s) { return s.trim(); }).filter(Boolean);
  }
  function body() {
    var algs = [];
    Array.prototype.forEach.call(form.querySelectorAll('input[name="algorithms"]'), function (c) {
      if (c.checked) algs.push(c.value);
    });
    return {
      version: num("version"),
      tls_min: el("tls_min").value,
      tls_max: el("tls_max").value,
      allowed_zones: lines("allowed_zones"),
      allowlist: lines("allowlist"),
      max_message_bytes: num("max_message_bytes"),
      max_conns: num("max_conns"),
      max_conns_per_source: num("max_conns_per_source"),
      idle_timeout: secs("idle_timeout"),
      scanner_user_agents: lines("scanner_user_agents"),
      algorithms: algs,
      nonce_ttl: secs("nonce_ttl"),
      min_expires: secs("min_expires"),
      max_expires: secs("max_expires"),
      max_contacts: num("max_contacts"),
      guard: {
        rate_window: secs("guard.rate_window"),
        rate_limit: num("guard.rate_limit"),
        flood_ban: secs("guard.flood_ban"),
        fail_window: secs("guard.fail_window"),
        max_fails_per_source: num("guard.max_fails_per_source"),
        max_fails_per_user: num("guard.max_fails_per_user"),
        max_users_per_source: num("guard.max_users_per_source"),
        ban_bits_v4: num("guard.ban_bits_v4"), // empty: 0, one host
        ban_bits_v6: num("guard.ban_bits_v6"),
        auth_ban: secs("guard.auth_ban"),
        max_tracked: num("guard.max_tracked")
      }
    };
  }
  function say(text, bad) {
    var r = form.querySelector("[data-result]");
    r.textContent = text;
    r.className = bad ? "bad" : "ok";
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var m = document.querySelector('meta[name="csrf-token"]');
    if (window.edgepbxForms) window.edgepbxForms.clearErrors(form);
    fetch(form.dataset.sipApi, {
      method: "PUT", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": m ? m.getAttribute("content") : "" },
      body: JSON.stringify(body())
    }).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var msg = data.detail || data.title || ("error " + res.status), err = new Error(msg.charAt(0).toUpperCase() + msg.slice(1));
          err.field = data.field || "";
          throw err;
        }
        return data;
      });
    }).then(function (v) {
      var note = "Version " + v.settings.version + (v.live ? " saved and in effect" : " saved; applies after a restart");
      if (v.live && v.restart_fields && v.restart_fields.length) note += " except " + v.restart_fields.join(", ") + " (after a restart)";
      say(note + ".", false);
      el("version").value = String(v.settings.version); // the next save edits this version
    }, function (e) {
      var f = window.edgepbxForms;
      if (f && e.field) f.showError(form, e); else say(e.message, true);
    });
  });
})();
