// edgepbx call recording rules: one row per rule (extension, trunk or
// outbound route prefix, and its mode), collected into the body of
// PUT /api/v1/recordings/policy with the retention the page was rendered
// with. A refusal (problem+json "field": /extensions/<name>,
// /trunks/<name>, /routes/<i>/prefix or /mode) is shown next to the rule
// it names. Validation is the server's (firmware/callrec). No inline
// script (strict CSP).
"use strict";
(function () {
  var form = document.getElementById("rec-policy");
  if (!form) return;
  var base = JSON.parse(form.dataset.policy);
  var rules = document.getElementById("rec-rules");
  var seq = 0;
  var KINDS = [["extensions", "Extension"], ["trunks", "Trunk"], ["routes", "Route prefix"]];
  var MODES = [["never", "never"], ["on-demand", "on demand"], ["always", "always"]];

  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { if (attrs[k] !== undefined) e.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (k) { e.appendChild(typeof k === "string" ? document.createTextNode(k) : k); });
    return e;
  }
  function select(options, value) {
    var s = el("select", {}, options.map(function (o) { return el("option", { value: o[0] }, [o[1]]); }));
    s.value = value || options[0][0];
    return s;
  }
  function field(label, control, hint) {
    var id = "rp" + (++seq);
    control.id = id;
    var wrap = el("div", { class: "field" }, [el("label", { for: id }, [label]), control]);
    if (hint) {
      wrap.appendChild(el("p", { class: "hint", id: id + "-hint" }, [hint]));
      control.dataset.hint = id + "-hint";
      control.setAttribute("aria-describedby", id + "-hint");
    }
    var err = el("p", { class: "bad field-error", id: id + "-err" });
    err.hidden = true;
    wrap.appendChild(err);
    control.dataset.err = id + "-err";
    return wrap;
  }
  function empty() { if (!rules.querySelector("fieldset.row")) rules.appendChild(el("p", { class: "hint empty" }, ["No rules."])); }
  function addRule(kind, name, mode) {
    var e = rules.querySelector(".empty");
    if (e) rules.removeChild(e);
    var row = el("fieldset", { class: "row" }, [el("legend", {}, ["Rule"])]);
    var k = select(KINDS, kind);
    k.dataset.key = "kind";
    var n = el("input", { type: "text", autocomplete: "off", spellcheck: "false", maxlength: "64" });
    n.value = name || "";
    n.dataset.key = "name";
    var m = select(MODES, mode);
    m.dataset.key = "mode";
    var del = el("button", { type: "button", class: "danger" }, ["Delete"]);
    function legend() {
      var l = "Rule: " + KINDS.filter(function (x) { return x[0] === k.value; })[0][1].toLowerCase() + " " + (n.value || (k.value === "routes" ? "(every outbound call)" : ""));
      row.querySelector("legend").textContent = l;
      del.setAttribute("aria-label", "Delete " + l);
    }
    k.addEventListener("change", legend);
    n.addEventListener("input", legend);
    row.appendChild(el("div", { class: "grid" }, [field("Applies to", k), field("Extension, trunk or prefix", n, "A route prefix may be empty: every outbound call."), field("Mode", m)]));
    del.addEventListener("click", function () {
      rules.removeChild(row);
      empty();
      document.getElementById("rec-add").focus();
      status("Deleted; not saved yet.", false);
    });
    row.appendChild(del);
    row.rule = function () { return { kind: k.value, name: n.value.trim(), mode: m.value, k: k, n: n, m: m }; };
    legend();
    rules.appendChild(row);
    return row;
  }
  Object.keys(base.extensions || {}).sort().forEach(function (x) { addRule("extensions", x, base.extensions[x]); });
  Object.keys(base.trunks || {}).sort().forEach(function (x) { addRule("trunks", x, base.trunks[x]); });
  (base.routes || []).forEach(function (r) { addRule("routes", r.prefix, r.mode); });
  empty();
  document.getElementById("rec-add").addEventListener("click", function () {
    addRule("extensions", "", "on-demand").querySelector("select").focus();
  });

  function collect() {
    var body = JSON.parse(JSON.stringify(base));
    body.extensions = {};
    body.trunks = {};
    body.routes = [];
    body.announce = document.getElementById("rec-announce").checked;
    var ptrs = {};
    var dup = null;
    Array.prototype.forEach.call(rules.querySelectorAll("fieldset.row"), function (row) {
      var r = row.rule();
      if (r.kind === "routes") {
        ptrs["/routes/" + body.routes.length + "/prefix"] = [r.n, r.k];
        ptrs["/routes/" + body.routes.length + "/mode"] = [r.m];
        body.routes.push({ prefix: r.name, mode: r.mode });
      } else {
        // The policy is a map: a second rule for the same name would
        // silently replace the first, so it is refused here.
        if (Object.prototype.hasOwnProperty.call(body[r.kind], r.name)) dup = dup || [r.n, r.name];
        body[r.kind][r.name] = r.mode;
        ptrs["/" + r.kind + "/" + r.name.replace(/~/g, "~0").replace(/\//g, "~1")] = [r.n, r.m];
      }
    });
    return { body: body, ptrs: ptrs, dup: dup };
  }
  function status(msg, bad) {
    var s = document.getElementById("rec-status");
    s.textContent = msg;
    s.className = bad ? "bad" : "ok";
  }
  function clearErrors() {
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (c) {
      c.removeAttribute("aria-invalid");
      if (c.dataset.hint) c.setAttribute("aria-describedby", c.dataset.hint); else c.removeAttribute("aria-describedby");
    });
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (p) { p.textContent = ""; p.hidden = true; });
  }
  function showError(ctrls, msg) {
    var err = document.getElementById(ctrls[0].dataset.err);
    err.textContent = msg;
    err.hidden = false;
    ctrls.forEach(function (c) {
      c.setAttribute("aria-invalid", "true");
      c.setAttribute("aria-describedby", (c.dataset.hint ? c.dataset.hint + " " : "") + err.id);
    });
    ctrls[0].focus();
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    clearErrors();
    var c = collect();
    if (c.dup) {
      showError([c.dup[0]], "There is already a rule for " + c.dup[1] + ".");
      status("Not saved: there is already a rule for " + c.dup[1] + ".", true);
      return;
    }
    status("Saving…", false);
    fetch("/api/v1/recordings/policy", { method: "PUT", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() }, body: JSON.stringify(c.body) })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (data) {
          if (res.ok) {
            status("Saved.", false);
            window.location = "/recordings";
            return;
          }
          var msg = data.detail || data.title || ("error " + res.status);
          if (data.field && c.ptrs[data.field]) showError(c.ptrs[data.field], msg);
          status("Not saved: " + msg, true);
        });
      }, function (e) { status("Not saved: " + e.message, true); });
  });
})();
