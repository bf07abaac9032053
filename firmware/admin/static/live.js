// edgepbx admin UI, live parts: the connect-a-phone cards and the
// extensions' registrations (Extensions page), the calls in progress with
// hang-up (Calls page), the trunk test (Dial plan and Calls pages). It polls
// the JSON API every few seconds; everything is built with DOM calls and
// textContent (strict CSP: no inline script, no HTML from data).
"use strict";
(function () {
  var POLL_MS = 2500;
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (d) {
        if (!res.ok) {
          var e = new Error(d.detail || d.title || ("error " + res.status));
          e.status = res.status;
          throw e;
        }
        return d;
      });
    });
  }
  function el(tag, attrs, kids) {
    var n = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") n.textContent = attrs[k];
      else if (k === "class") n.className = attrs[k];
      else n.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (c) { if (c) n.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return n;
  }
  function utc(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return "";
    return d.toISOString().slice(11, 19) + " UTC";
  }
  function timeEl(iso) {
    return el("time", { datetime: iso, text: utc(iso) });
  }
  // poll runs f now and every POLL_MS while the page is shown; it stops
  // when the session is gone (401/403) rather than hammer the login.
  function poll(f) {
    var stopped = false;
    function tick() {
      if (stopped) return;
      if (document.visibilityState === "hidden") { setTimeout(tick, POLL_MS); return; }
      f().then(function () { setTimeout(tick, POLL_MS); }, function (e) {
        if (e && (e.status === 401 || e.status === 403)) { stopped = true; return; }
        setTimeout(tick, POLL_MS * 2);
      });
    }
    tick();
  }

  // copyButton copies text to the clipboard; where the browser refuses,
  // it selects the text so the user can copy it by hand.
  function copyButton(label, text, target) {
    var b = el("button", { type: "button", class: "copy", "aria-label": "Copy " + label, text: "Copy" });
    b.addEventListener("click", function () {
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 2000); };
      var manual = function () {
        var r = document.createRange();
        r.selectNodeContents(target);
        var s = window.getSelection();
        s.removeAllRanges();
        s.addRange(r);
        b.textContent = "Selected: press Ctrl+C";
      };
      if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, manual);
      else manual();
    });
    return b;
  }
  function copyable(label, text, cls) {
    var code = el("code", { class: cls || "", text: text });
    return el("dd", {}, [code, " ", copyButton(label, text, code)]);
  }
  function regText(regs) {
    if (!regs || !regs.length) return [el("span", { class: "warning", text: "not registered" })];
    var out = [];
    regs.forEach(function (r, i) {
      if (i) out.push(el("br"));
      out.push(el("span", { class: "ok", text: "registered" }));
      out.push(" from " + r.source + " (" + r.transport + ")" + (r.user_agent ? ", " + r.user_agent : "") + ", until ");
      out.push(timeEl(r.expires));
    });
    return out;
  }
  function setKids(n, kids) {
    while (n.firstChild) n.removeChild(n.firstChild);
    kids.forEach(function (k) { n.appendChild(typeof k === "string" ? document.createTextNode(k) : k); });
  }

  // ---- Extensions page: connect-a-phone cards, live registrations ----
  var cards = document.getElementById("connect-cards");
  var cardSeq = 0;
  function card(c, password) {
    cardSeq++;
    var id = "cc-" + cardSeq;
    var dl = el("dl", { class: "connect" });
    function row(dt, dd) { dl.appendChild(el("dt", { text: dt })); dl.appendChild(dd); }
    row("SIP server (domain)", copyable("SIP server", c.domain));
    var also = c.names.concat(c.addresses).filter(function (n) { return n !== c.domain; });
    if (also.length) row("The box also answers to", el("dd", { text: also.join(", ") }));
    row("Ports", el("dd", { text: c.ports.map(function (p) { return p.transport.toUpperCase() + " " + p.port; }).join(", ") || "SIP is not listening" }));
    row("User", copyable("user", c.user));
    row("Authentication ID", copyable("authentication ID", c.auth_id));
    row("Realm", copyable("realm", c.realm));
    if (password) {
      var pw = copyable("password", password, "secret");
      pw.appendChild(el("p", { class: "hint", text: "Shown once: copy it now. The box keeps only digests; this card forgets it when dismissed." }));
      row("Password", pw);
    } else {
      row("Password", el("dd", { class: "hint", text: "Not shown again. Use \u201cNew password\u201d for a new one (its phones must then be set again)." }));
    }
    if (c.tls_fingerprint) row("TLS certificate (SHA-256)", copyable("certificate fingerprint", c.tls_fingerprint, "fp"));
    var state = el("dd", { "data-card-reg": c.user }, regText(c.registered));
    row("Phone", state);
    var qrAlt = c.qr_kind === "provisioning" ? "QR code of the phone's one-time provisioning link" : "QR code of the account address " + c.qr;
    var fig = el("figure", { class: "qr" }, [
      el("img", { src: "/api/v1/extensions/" + encodeURIComponent(c.user) + "/qr.svg?n=" + cardSeq, alt: qrAlt, width: "200", height: "200" }),
      c.qr_kind === "provisioning" ?
        el("figcaption", { class: "hint", text: "Linphone: Assistant \u2192 Fetch remote configuration \u2192 scan. Works once, while the enrolment window is open." }) :
        el("figcaption", { class: "hint" }, ["Softphones that scan an account: " + c.qr + " (no password in the code: type it in). A desk phone the box can set up itself: add it on the ",
          el("a", { href: "/phones", text: "Phones page" }), " for a one-time provisioning link."])
    ]);
    var dismiss = el("button", { type: "button", class: "dismiss", text: "Dismiss" });
    var sec = el("section", { class: "card connect-card", "aria-labelledby": id, "data-card": c.user, "data-has-password": password ? "1" : "" }, [
      el("h2", { id: id, text: "Connect a phone to extension " + c.user }),
      el("div", { class: "connect-body" }, [dl, fig]),
      dismiss
    ]);
    dismiss.addEventListener("click", function () { sec.remove(); });
    cards.insertBefore(sec, cards.firstChild);
    sec.querySelector("h2").setAttribute("tabindex", "-1");
    sec.querySelector("h2").focus();
  }
  function openCard(user, password, from) {
    return api("GET", "/api/v1/extensions/" + encodeURIComponent(user) + "/connect").then(function (c) {
      card(c, password);
    }, function (e) {
      var r = from && (from.querySelector("[data-result]") || from.parentNode.querySelector("[data-result]"));
      if (r) { r.textContent = e.message; r.className = "bad"; }
    });
  }
  var list = document.getElementById("ext-list");
  function shownExtensions() {
    return Array.prototype.map.call(list.querySelectorAll("tr[data-ext]"), function (r) { return r.dataset.ext; });
  }
  // refreshList replaces the table with the server's current one (the
  // same template: actions, throttles), without a page load.
  function refreshList() {
    return fetch("/extensions", { credentials: "same-origin" }).then(function (res) {
      if (!res.ok) { var e = new Error("error " + res.status); e.status = res.status; throw e; }
      return res.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("ext-list");
      if (fresh) list.replaceChildren.apply(list, Array.prototype.slice.call(fresh.childNodes).map(function (n) { return document.adoptNode(n); }));
    });
  }
  function updateRegs() {
    return api("GET", "/api/v1/registrations").then(function (d) {
      var by = {};
      d.registrations.forEach(function (r) { (by[r.user] = by[r.user] || []).push(r); });
      var shown = shownExtensions();
      var same = shown.length === d.extensions.length && d.extensions.every(function (u) { return shown.indexOf(u) >= 0; });
      var p = same ? Promise.resolve() : refreshList();
      return p.then(function () {
        document.querySelectorAll("[data-reg],[data-card-reg]").forEach(function (n) {
          setKids(n, regText(by[n.dataset.reg || n.dataset.cardReg]));
        });
      });
    });
  }
  if (cards && list) {
    document.addEventListener("edgepbx:answer", function (ev) {
      var d = ev.detail;
      if (!d || !d.user) return;
      var form = ev.target.closest("form");
      if (form) form.reset();
      openCard(d.user, d.password, ev.target).then(updateRegs);
    });
    document.addEventListener("click", function (ev) {
      var b = ev.target.closest("button[data-connect]");
      if (!b) return;
      var open = cards.querySelector('[data-card="' + CSS.escape(b.dataset.connect) + '"]');
      if (open) { open.querySelector("h2").focus(); return; }
      openCard(b.dataset.connect, "", b.parentNode);
    });
    poll(updateRegs);
  }

  // Dashboard: the registrations line (value and level) follows the registrar.
  var dashReg = Array.prototype.filter.call(document.querySelectorAll("#status li .name"), function (n) {
    return n.textContent === "SIP registrations";
  })[0];
  if (dashReg) {
    var regItem = dashReg.parentNode;
    poll(function () {
      return api("GET", "/api/v1/registrations").then(function (d) {
        var users = {};
        d.registrations.forEach(function (r) { users[r.user] = true; });
        var n = Object.keys(users).length;
        regItem.querySelector(".value").textContent = n + " of " + d.extensions.length + " extensions";
        if (n > 0) {
          regItem.className = "item ok";
          regItem.dataset.level = "ok";
          var lvl = regItem.querySelector(".lvl");
          if (lvl) { lvl.className = "lvl ok"; lvl.textContent = "ok"; }
          var why = regItem.querySelector(".why");
          if (why) why.remove();
        }
      });
    });
  }

  // ---- Dial plan page: trunk test, provider templates ----
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-trunk-test]");
    if (!b) return;
    var out = b.parentNode.querySelector("[data-result]");
    b.disabled = true;
    out.textContent = "Testing\u2026";
    out.className = "";
    api("POST", "/api/v1/telephony/trunks/" + encodeURIComponent(b.dataset.trunkTest) + "/test", {}).then(function (d) {
      out.textContent = d.status;
      out.className = d.ok ? "ok" : "bad";
    }, function (e) {
      out.textContent = e.message;
      out.className = "bad";
    }).then(function () { b.disabled = false; });
  });
  var tpl = document.getElementById("tel-template");
  if (tpl) {
    var templates = [];
    try { templates = JSON.parse(tpl.dataset.templates || "[]"); } catch (e) { templates = []; }
    tpl.appendChild(el("option", { value: "", text: "an empty form" }));
    templates.forEach(function (t) { tpl.appendChild(el("option", { value: t.id, text: t.name })); });
    var note = document.getElementById("tel-template-note");
    var picked = function () { return templates.filter(function (t) { return t.id === tpl.value; })[0]; };
    tpl.addEventListener("change", function () { var t = picked(); note.textContent = t ? t.note : ""; });
    // After the editor (telephony.js, on the form) added the row: fill
    // it from the template, as if typed.
    document.addEventListener("click", function (ev) {
      var b = ev.target.closest('button[data-add="trunks"]');
      var t = picked();
      if (!b || !t) return;
      var rows = document.querySelectorAll("#tel-trunks > fieldset.row");
      var row = rows[rows.length - 1];
      if (!row) return;
      var set = function (sel, v) {
        var c = row.querySelector(sel);
        if (!c || v === undefined || v === null) return;
        if (c.type === "checkbox") c.checked = v; else c.value = String(v);
        c.dispatchEvent(new Event("change", { bubbles: true }));
        c.dispatchEvent(new Event("input", { bubbles: true }));
      };
      set('input[data-key="host"]:not([type="number"])', t.host || "");
      set('input[data-key="host"][type="number"]', t.port);
      set('select[data-key="transport"]', t.transport);
      set('select[data-key="srtp"]', t.srtp || "");
      set('input[data-key="auth"]', t.auth === "register");
      set('input[data-key="domain"]', t.domain || "");
    });
  }

  // ---- Calls page: calls in progress, hang-up ----
  var live = document.querySelector("[data-live-calls]");
  if (live) {
    var body = document.getElementById("live-calls-body");
    var canHang = live.hasAttribute("data-can-hangup");
    var empty = document.getElementById("calls-empty");
    var emptyText = empty ? empty.textContent : "";
    var say = function (text, bad) {
      var r = live.querySelector("[data-result]");
      r.textContent = text;
      r.className = bad ? "bad" : "ok";
    };
    var render = function (calls) {
      var rows = calls.map(function (c) {
        var enc = c.srtp_caller && c.srtp_callee ? "yes" : c.srtp_caller || c.srtp_callee ? "one side" : "no";
        var act = el("td");
        if (canHang) {
          var b = el("button", { type: "button", class: "danger", "data-hangup": c.id, "aria-label": "Hang up " + c.from + " to " + c.to, text: "Hang up" });
          act.appendChild(b);
        }
        // The action first: on a phone the table scrolls sideways.
        return el("tr", { "data-call": c.id }, [act,
          el("td", { text: c.from }), el("td", { text: c.to + (c.trunk ? " (trunk " + c.trunk + ")" : "") }),
          el("td", {}, [timeEl(c.start)]),
          el("td", {}, c.answer ? ["answered ", timeEl(c.answer)] : ["ringing"]),
          el("td", { text: c.codec || "–" }), el("td", { text: c.answer ? enc : "–" }),
          el("td", { text: c.mos ? c.mos.toFixed(1) : "–" })]);
      });
      if (!rows.length) rows = [el("tr", {}, [el("td", { colspan: "8", text: "No calls in progress." })])];
      body.replaceChildren.apply(body, rows);
      if (empty) {
        empty.textContent = calls.length ? "No finished calls match yet: " + calls.length + " in progress, shown above." :
          emptyText.indexOf("in progress") >= 0 ? "No calls match." : emptyText;
      }
    };
    var refresh = function () { return api("GET", "/api/v1/calls/live").then(function (d) { render(d.calls); }); };
    live.addEventListener("click", function (ev) {
      var b = ev.target.closest("button[data-hangup]");
      if (!b) return;
      if (!window.confirm("Hang up this call (" + b.getAttribute("aria-label").slice(8) + ")?")) return;
      b.disabled = true;
      api("POST", "/api/v1/calls/" + encodeURIComponent(b.dataset.hangup) + "/hangup", {}).then(function (d) {
        say(d.status, false);
        return refresh();
      }, function (e) { b.disabled = false; say(e.message, true); });
    });
    poll(refresh);
  }
})();
