// edgepbx dial plan editor: builds one form field per setting from the
// configuration in data-config, collects the fields back into the JSON body
// PUT /api/v1/telephony accepts (settings it has no field for are sent back
// unchanged), and shows a refusal next to the field the answer names
// (problem+json "field", a JSON pointer). No inline script (strict CSP).
"use strict";
(function () {
  var form = document.getElementById("tel-edit");
  if (!form) return;
  var base = JSON.parse(form.dataset.config);
  var CLASSES = ["internal", "national", "international", "premium"];
  var R = window.edgepbxRows;
  var ed = R.editor(form, "tf", "tel-status");
  var el = R.el, text = R.text, select = R.select, num = R.num, field = ed.field, status = ed.status;

  function words(s) { return s.split(/[\s,]+/).filter(Boolean); }
  function number(key, value, min, max) {
    var i = text(key, value ? value : "", { type: "number", inputmode: "numeric", min: min, max: max });
    return i;
  }
  function check(key, label, checked) {
    var id = ed.id();
    var c = el("input", { type: "checkbox", id: id });
    c.checked = !!checked;
    c.dataset.key = key;
    var wrap = el("div", { class: "field check" }, [c, el("label", { for: id }, [label])]);
    if (key) wrap.appendChild(ed.errorLine(c, id));
    return { box: c, wrap: wrap };
  }
  // classes is a group of check boxes, one per class of service; the group
  // carries the key and the error line.
  function classes(legend, value, hint) {
    var id = ed.id();
    var fs = el("fieldset", { class: "classes", id: id }, [el("legend", {}, [legend])]);
    fs.dataset.key = "classes";
    CLASSES.forEach(function (c) {
      var b = check("", c, (value || []).indexOf(c) >= 0);
      b.box.value = c;
      fs.appendChild(b.wrap);
    });
    if (hint) fs.appendChild(el("p", { class: "hint" }, [hint]));
    fs.appendChild(ed.errorLine(fs, id));
    fs.setAttribute("tabindex", "-1");
    return fs;
  }
  function checkedClasses(fs) {
    var out = [];
    Array.prototype.forEach.call(fs.querySelectorAll("input[type=checkbox]"), function (b) { if (b.checked) out.push(b.value); });
    return out;
  }
  function splitHostPort(s) {
    s = s || "";
    var i = s.lastIndexOf(":");
    if (i < 0 || (s.indexOf(":") !== i && s.charAt(0) !== "[")) return [s, ""];
    var h = s.slice(0, i);
    if (h.charAt(0) === "[" && h.charAt(h.length - 1) === "]") h = h.slice(1, -1);
    return [h, s.slice(i + 1)];
  }
  function joinHostPort(h, p) {
    h = h.trim();
    if (h.indexOf(":") >= 0) h = "[" + h + "]";
    return h + ":" + p.trim();
  }

  // Each kind of row: a title, how to build its fields from a value and
  // how to read them back.
  var kinds = {
    trunks: {
      title: "Trunk",
      blank: { transport: "udp", auth: "register", limits: {} },
      build: function (row, t) {
        var hp = splitHostPort(t.host);
        var name = text("name", t.name, { maxlength: 32, required: true });
        var host = text("host", hp[0], { maxlength: 253, inputmode: "url", required: true });
        var port = number("host", hp[1] || "5060", 1, 65535);
        var reg = check("auth", "Registers with the provider (user name and password)", t.auth !== "ip");
        var pai = check("assert_identity", "Trusted provider: send the caller's number as P-Asserted-Identity", t.assert_identity);
        var user = text("username", t.username, { maxlength: 128 });
        var dom = text("domain", t.domain, { maxlength: 253, inputmode: "url" });
        var pw = text("password", "", { type: "password", autocomplete: "new-password", maxlength: 128 });
        var regFields = el("div", { class: "grid" }, [
          field("User name", user),
          field("Domain", dom),
          field("Password", pw, t.password_set ? "A password is stored and never shown; leave empty to keep it." : "No password stored yet."),
        ]);
        function toggle() { regFields.hidden = !reg.box.checked; }
        reg.box.addEventListener("change", toggle);
        toggle();
        name.addEventListener("input", function () { legend(row, name.value); trunkNames(); });
        row.appendChild(el("div", { class: "grid" }, [
          field("Name", name, "Letters, digits, - and _."),
          field("Host", host),
          field("Port", port),
          field("Transport", select("transport", [["udp", "UDP"], ["tcp", "TCP"], ["tls", "TLS"]], t.transport)),
          field("SRTP (media encryption)", select("srtp", [["", "optional (default)"], ["required", "required"], ["off", "off"]], t.srtp)),
          field("Caller ID", text("caller_id", t.caller_id, { inputmode: "tel", maxlength: 32 }), "Number shown on calls out; empty: the extension's."),
          field("Maximum concurrent calls", number("limits/max_concurrent", (t.limits || {}).max_concurrent, 0, 100000), "Empty: 30."),
          field("Calls per hour", number("limits/max_per_hour", (t.limits || {}).max_per_hour, 0, 100000), "Empty: 600."),
        ]));
        row.appendChild(pai.wrap);
        row.appendChild(reg.wrap);
        row.appendChild(regFields);
        row.appendChild(field("Provider source networks (IP authentication)", text("peers", (t.peers || []).join(" "), { inputmode: "url" }),
          "CIDR networks separated by spaces, e.g. 192.0.2.0/28; needed when the trunk does not register."));
        row.read = function () {
          var v = JSON.parse(JSON.stringify(t));
          var r = reg.box.checked;
          v.name = name.value.trim();
          v.host = joinHostPort(host.value, port.value);
          v.transport = row.querySelector('[data-key="transport"]').value;
          v.auth = r ? "register" : "ip";
          v.peers = words(row.querySelector('[data-key="peers"]').value);
          v.username = r ? user.value.trim() : "";
          v.domain = r ? dom.value.trim() : "";
          delete v.password;
          delete v.password_set;
          if (r && pw.value !== "") v.password = pw.value;
          v.srtp = row.querySelector('[data-key="srtp"]').value;
          v.caller_id = row.querySelector('[data-key="caller_id"]').value.trim();
          v.assert_identity = pai.box.checked;
          v.limits = { max_concurrent: num(row.querySelector('[data-key="limits/max_concurrent"]').value),
            max_per_hour: num(row.querySelector('[data-key="limits/max_per_hour"]').value) };
          return v;
        };
        return t.name;
      },
    },
    routes: {
      title: "Route",
      blank: {},
      build: function (row, r) {
        var prefix = text("prefix", r.prefix, { inputmode: "tel", maxlength: 32 });
        prefix.addEventListener("input", function () { legend(row, prefix.value || "default"); });
        row.appendChild(el("div", { class: "grid" }, [
          field("Prefix", prefix, "Empty: the default route."),
          field("Trunk", trunkPick(r.trunk)),
          field("Strip digits", number("strip", r.strip, 0, 32)),
          field("Prepend digits", text("add", r.add, { inputmode: "tel", maxlength: 32 })),
        ]));
        row.read = function () {
          var v = JSON.parse(JSON.stringify(r));
          v.prefix = prefix.value.trim();
          v.trunk = row.querySelector('[data-key="trunk"]').value.trim();
          v.strip = num(row.querySelector('[data-key="strip"]').value);
          v.add = row.querySelector('[data-key="add"]').value.trim();
          return v;
        };
        return r.prefix === undefined ? "" : (r.prefix || "default");
      },
    },
    dids: {
      title: "DID",
      blank: {},
      build: function (row, d) {
        var n = text("number", d.number, { inputmode: "tel", maxlength: 32, required: true });
        n.addEventListener("input", function () { legend(row, n.value); });
        row.appendChild(el("div", { class: "grid" }, [
          field("Number", n),
          field("Extension", text("extension", d.extension, { list: "tel-ext-names", inputmode: "tel", required: true })),
          field("From trunk", text("trunk", d.trunk, { list: "tel-trunk-names" }), "Empty: any trunk."),
        ]));
        row.read = function () {
          var v = JSON.parse(JSON.stringify(d));
          v.number = n.value.trim();
          v.extension = row.querySelector('[data-key="extension"]').value.trim();
          v.trunk = row.querySelector('[data-key="trunk"]').value.trim();
          return v;
        };
        return d.number;
      },
    },
    extensions: {
      title: "Extension",
      blank: { classes: null, limits: {} },
      build: function (row, x) {
        var n = text("number", x.number, { list: "tel-ext-names", inputmode: "tel", maxlength: 32, required: true });
        n.addEventListener("input", function () { legend(row, n.value); });
        var cid = text("caller_id", (base.caller_ids || {})[x.number], { inputmode: "tel", maxlength: 32 });
        cid.dataset.map = "caller_ids";
        row.callerID = function () { return [x.number, n.value.trim(), cid.value.trim()]; };
        var cl = classes("Classes of service", x.classes, "None ticked: the default classes.");
        var ns = check("no_suspend", "Never suspend after a fraud burst (the event is still raised)", x.no_suspend);
        row.appendChild(el("div", { class: "grid" }, [
          field("Extension", n),
          field("Maximum concurrent calls", number("limits/max_concurrent", (x.limits || {}).max_concurrent, 0, 100000)),
          field("Outside calls per hour", number("limits/max_per_hour", (x.limits || {}).max_per_hour, 0, 100000)),
          field("Caller ID on calls out", cid, "Empty: the trunk's."),
        ]));
        row.appendChild(cl);
        row.appendChild(ns.wrap);
        row.read = function () {
          var v = JSON.parse(JSON.stringify(x));
          var c = checkedClasses(cl);
          v.number = n.value.trim();
          v.classes = c.length ? c : null;
          v.limits = { max_concurrent: num(row.querySelector('[data-key="limits/max_concurrent"]').value),
            max_per_hour: num(row.querySelector('[data-key="limits/max_per_hour"]').value) };
          v.no_suspend = ns.box.checked;
          return v;
        };
        return x.number;
      },
    },
  };

  // legend names the row, and its Delete button after it.
  function legend(row, what) { row.label(what); }
  function addRow(kind, value) {
    var k = kinds[kind];
    var row = ed.row(k.title);
    row.dataset.kind = kind;
    var del = row.del;
    legend(row, k.build(row, value));
    del.addEventListener("click", function () {
      var list = row.parentNode;
      list.removeChild(row);
      trunkNames();
      form.querySelector('[data-add="' + kind + '"]').focus();
      status("Deleted; not saved yet.", false);
      if (!list.children.length) list.appendChild(el("p", { class: "hint empty" }, ["None."]));
    });
    row.appendChild(del);
    var list = document.getElementById("tel-" + kind);
    var empty = list.querySelector(".empty");
    if (empty) list.removeChild(empty);
    list.appendChild(row);
    return row;
  }
  function trunkNames() {
    var dl = document.getElementById("tel-trunk-names");
    dl.textContent = "";
    Array.prototype.forEach.call(document.querySelectorAll('#tel-trunks [data-key="name"]'), function (i) {
      if (i.value) dl.appendChild(el("option", { value: i.value }));
    });
    Array.prototype.forEach.call(document.querySelectorAll("select[data-trunk-pick]"), fillTrunkPick);
  }
  // trunkPick is a route's trunk, picked from the trunks being edited; a
  // name no trunk has any more stays listed, marked, so the save names it.
  function trunkPick(value) {
    var s = el("select", { required: "" });
    s.dataset.key = "trunk";
    s.dataset.trunkPick = "";
    s.dataset.want = value || "";
    fillTrunkPick(s);
    s.addEventListener("change", function () { s.dataset.want = s.value; });
    return s;
  }
  function fillTrunkPick(s) {
    var want = s.dataset.want;
    var names = Array.prototype.map.call(document.querySelectorAll('#tel-trunks [data-key="name"]'), function (i) { return i.value; }).filter(Boolean);
    s.textContent = "";
    s.appendChild(el("option", { value: "" }, ["(pick a trunk)"]));
    names.forEach(function (n) { s.appendChild(el("option", { value: n }, [n])); });
    if (want && names.indexOf(want) < 0) s.appendChild(el("option", { value: want }, [want + " (no such trunk)"]));
    s.value = want;
  }

  // Numbering: the settings that are not lists of rows.
  var numbering = document.getElementById("tel-numbering");
  var defaults = classes("Default classes of service", base.default_classes, "For extensions not listed below.");
  defaults.dataset.key = "default_classes";
  numbering.appendChild(el("div", { class: "grid" }, [
    field("Country", text("country", base.country, { maxlength: 2, autocapitalize: "characters", required: true }), "ISO code, e.g. DE, AT, CH, FR, GB, US."),
    field("Trunk for emergency calls", text("emergency_trunk", base.emergency_trunk, { list: "tel-trunk-names" }), "Empty: the normal routes."),
    field("More emergency numbers", text("emergency", (base.emergency || []).join(" "), { inputmode: "tel" }), "Added to the country's; separated by spaces."),
    field("More premium prefixes (blocked unless the class allows)", text("premium_prefixes", (base.premium_prefixes || []).join(" "), { inputmode: "tel" })),
  ]));
  numbering.appendChild(defaults);

  // Park slots (features.park): the rest of features is kept as it is.
  var park = document.getElementById("tel-park");
  var bp = (base.features && base.features.park) || {};
  park.appendChild(el("div", { class: "grid" }, [
    field("First slot", text("first", bp.first, { inputmode: "numeric", maxlength: 9 }), "E.g. 71: slots 71, 72 … A phone parks a call by transferring it to the park code or to a free slot; dialling the slot takes it back."),
    field("Number of slots", number("count", bp.count, 0, 64), "Empty or 0: park is off."),
    field("Timeout (seconds)", number("timeout", bp.timeout, 10, 3600), "Then the call rings its parker back. Empty: 120."),
    field("Fallback", text("fallback", bp.fallback, { list: "tel-ext-names" }), "When the parker does not answer the ring-back and has no no-answer forward: an extension, a ring group or voicemail/ and an extension. Empty: the parker's voicemail."),
    field("Music class", text("music", bp.music), "Empty: the default music on hold."),
  ]));

  Object.keys(kinds).forEach(function (kind) {
    (base[kind] || []).forEach(function (v) { addRow(kind, v); });
    if (!(base[kind] || []).length) document.getElementById("tel-" + kind).appendChild(el("p", { class: "hint empty" }, ["None."]));
  });
  var exts = document.getElementById("tel-ext-names");
  words(form.dataset.extensions || "").forEach(function (n) { exts.appendChild(el("option", { value: n })); });
  trunkNames();

  form.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-add]");
    if (!b) return;
    var kind = b.dataset.add;
    var row = addRow(kind, JSON.parse(JSON.stringify(kinds[kind].blank)));
    row.querySelector("input").focus();
  });

  // collect reads every field into the request body and notes, for each
  // JSON pointer, the controls that edit it.
  function collect() {
    var body = JSON.parse(JSON.stringify(base));
    var ptrs = {};
    function note(p, c) { (ptrs[p] = ptrs[p] || []).push(c); }
    function val(key) { return numbering.querySelector('[data-key="' + key + '"]').value.trim(); }
    body.country = val("country").toUpperCase();
    body.emergency_trunk = val("emergency_trunk");
    body.emergency = words(val("emergency"));
    body.premium_prefixes = words(val("premium_prefixes"));
    body.default_classes = checkedClasses(defaults);
    body.features = body.features || {};
    body.features.park = {};
    Array.prototype.forEach.call(park.querySelectorAll("[data-key]"), function (c) {
      var v = c.value.trim();
      note("/features/park/" + c.dataset.key, c);
      if (v !== "") body.features.park[c.dataset.key] = c.type === "number" ? num(v) : v;
    });
    Array.prototype.forEach.call(numbering.querySelectorAll("[data-key]"), function (c) {
      if (c.dataset.key) note("/" + c.dataset.key, c);
    });
    // Caller IDs per extension live in a map beside the rows: entries for
    // extensions without a row are kept as they are.
    var cids = JSON.parse(JSON.stringify(base.caller_ids || {}));
    Array.prototype.forEach.call(document.querySelectorAll("#tel-extensions > fieldset.row"), function (row) { delete cids[row.callerID()[0]]; });
    Object.keys(kinds).forEach(function (kind) {
      body[kind] = [];
      Array.prototype.forEach.call(document.querySelectorAll("#tel-" + kind + " > fieldset.row"), function (row, i) {
        body[kind].push(row.read());
        Array.prototype.forEach.call(row.querySelectorAll("[data-key]"), function (c) {
          if (c.dataset.map) return;
          if (c.dataset.key) note("/" + kind + "/" + i + "/" + c.dataset.key, c);
        });
        if (row.callerID) {
          var ci = row.callerID();
          if (ci[2] !== "") cids[ci[1]] = ci[2];
          note("/caller_ids/" + ci[1].replace(/~/g, "~0").replace(/\//g, "~1"), row.querySelector('[data-map="caller_ids"]'));
        }
      });
    });
    body.caller_ids = Object.keys(cids).length ? cids : null;
    return { body: body, ptrs: ptrs };
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    ed.clearErrors();
    ed.save("PUT", "/api/v1/telephony", collect(), function (data) { return "Saved: version " + data.version + "."; }, "/telephony");
  });
})();
