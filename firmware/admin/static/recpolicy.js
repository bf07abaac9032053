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
  var KINDS = [["extensions", "Extension"], ["trunks", "Trunk"], ["routes", "Route prefix"]];
  var MODES = [["never", "never"], ["on-demand", "on demand"], ["always", "always"]];
  var R = window.edgepbxRows;
  var ed = R.editor(form, "rp", "rec-status");
  var el = R.el, field = ed.field, status = ed.status;

  function empty() { if (!rules.querySelector("fieldset.row")) rules.appendChild(el("p", { class: "hint empty" }, ["No rules."])); }
  function addRule(kind, name, mode) {
    var e = rules.querySelector(".empty");
    if (e) rules.removeChild(e);
    var row = ed.row("Rule");
    var k = R.select("kind", KINDS, kind);
    var n = R.text("name", name, { maxlength: "64" });
    var m = R.select("mode", MODES, mode);
    var del = row.del;
    function legend() {
      row.label("Rule: " + KINDS.filter(function (x) { return x[0] === k.value; })[0][1].toLowerCase() + " " + (n.value || (k.value === "routes" ? "(every outbound call)" : "")), true);
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
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    ed.clearErrors();
    var c = collect();
    if (c.dup) {
      ed.showError([c.dup[0]], "There is already a rule for " + c.dup[1] + ".");
      status("Not saved: there is already a rule for " + c.dup[1] + ".", true);
      return;
    }
    ed.save("PUT", "/api/v1/recordings/policy", c, function () { return "Saved."; }, "/recordings");
  });
})();
