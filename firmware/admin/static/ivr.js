// edgepbx IVR editor: menus and time conditions as rows of fields, saved
// as the "ivr" object of the telephony configuration (read-modify-write:
// the configuration the page was rendered with, its version included, so
// a change made meanwhile is refused rather than overwritten). A refusal
// (problem+json "field", a JSON pointer under /ivr) is shown next to the
// field it names. Validation is the server's (firmware/ivr). No inline
// script (strict CSP).
"use strict";
(function () {
  var form = document.getElementById("ivr-edit");
  var tel = document.getElementById("tel-edit");
  if (!form || !tel) return;
  var base = JSON.parse(tel.dataset.config);
  var ivr = base.ivr || {};
  var PROMPTS = (form.dataset.prompts || "").split(" ").filter(Boolean);
  var DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
  var R = window.edgepbxRows;
  var ed = R.editor(form, "iv", "ivr-status");
  var el = R.el, text = R.text, select = R.select, num = R.num, field = ed.field, status = ed.status;

  function dest(key, value) { return text(key, value, { maxlength: 96, list: "ivr-dests" }); }
  function val(row, key) { return row.querySelector(':scope > .grid [data-key="' + key + '"]').value.trim(); }

  // A list of rows (menus, options, hours, ...): a container, an Add
  // button and a Delete button per row. Each row's read() returns its
  // value; ptrs(prefix, note) registers its controls under JSON pointers.
  function list(container, title, build, values, blank, addLabel) {
    var rows = el("div", { class: "rows" });
    container.appendChild(rows);
    var add = el("button", { type: "button" }, [addLabel]);
    function empty() { if (!rows.children.length) rows.appendChild(el("p", { class: "hint empty" }, ["None."])); }
    function addRow(v) {
      var e = rows.querySelector(":scope > .empty");
      if (e) rows.removeChild(e);
      var row = ed.row(title);
      var del = row.del;
      build(row, v);
      del.addEventListener("click", function () {
        rows.removeChild(row);
        empty();
        add.focus();
        status("Deleted; not saved yet.", false);
      });
      row.appendChild(del);
      rows.appendChild(row);
      return row;
    }
    add.addEventListener("click", function () {
      var r = addRow(JSON.parse(JSON.stringify(blank)));
      r.querySelector("input, select").focus();
    });
    (values || []).forEach(addRow);
    empty();
    container.appendChild(el("p", {}, [add]));
    return {
      read: function () { return Array.prototype.map.call(rows.querySelectorAll(":scope > fieldset.row"), function (r) { return r.read(); }); },
      ptrs: function (prefix, note) {
        Array.prototype.forEach.call(rows.querySelectorAll(":scope > fieldset.row"), function (r, i) { r.ptrs(prefix + "/" + i, note); });
      },
    };
  }
  // own registers a row's own controls (not those of nested rows).
  function own(row, prefix, note) {
    Array.prototype.forEach.call(row.querySelectorAll(":scope > .grid [data-key], :scope > fieldset.days"), function (c) {
      note(prefix + "/" + c.dataset.key, c);
    });
  }

  function buildOption(row, o) {
    var key = select("key", "1234567890*#".split("").map(function (k) { return [k, k]; }), o.key);
    row.appendChild(el("div", { class: "grid" }, [field("Key", key), field("Destination", dest("dest", o.dest))]));
    key.addEventListener("change", function () { row.label(key.value); });
    row.label(o.key || key.value);
    row.read = function () { return { key: val(row, "key"), dest: val(row, "dest") }; };
    row.ptrs = function (p, note) { own(row, p, note); };
  }
  function buildHours(row, h) {
    var id = ed.id();
    var days = el("fieldset", { class: "classes days", id: id, tabindex: "-1" }, [el("legend", {}, ["Days"])]);
    days.dataset.key = "days";
    DAYS.forEach(function (d) {
      var cid = ed.id();
      var b = el("input", { type: "checkbox", id: cid, value: d });
      b.checked = (h.days || []).indexOf(d) >= 0;
      days.appendChild(el("div", { class: "field check" }, [b, el("label", { for: cid }, [d])]));
    });
    days.appendChild(ed.errorLine(days, id));
    row.appendChild(days);
    row.appendChild(el("div", { class: "grid" }, [
      field("From", text("from", h.from, { maxlength: 5, placeholder: "08:00", inputmode: "numeric" })),
      field("To", text("to", h.to, { maxlength: 5, placeholder: "17:00", inputmode: "numeric" }), "HH:MM; 24:00 is the end of the day."),
    ]));
    row.label("");
    row.read = function () {
      return { days: Array.prototype.filter.call(days.querySelectorAll("input"), function (b) { return b.checked; }).map(function (b) { return b.value; }),
        from: val(row, "from"), to: val(row, "to") };
    };
    row.ptrs = function (p, note) { own(row, p, note); };
  }
  function buildHoliday(row, h) {
    row.appendChild(el("div", { class: "grid" }, [
      field("Name", text("name", h.name, { maxlength: 64 })),
      field("From", text("from", h.from, { type: "date" })),
      field("To", text("to", h.to, { type: "date" }), "Empty: one day."),
    ]));
    row.label(h.name || h.from);
    row.read = function () {
      var v = { from: val(row, "from") };
      if (val(row, "name")) v.name = val(row, "name");
      if (val(row, "to")) v.to = val(row, "to");
      return v;
    };
    row.ptrs = function (p, note) { own(row, p, note); };
  }
  function buildMenu(row, m) {
    var n = text("number", m.number, { inputmode: "tel", maxlength: 32, required: true });
    n.addEventListener("input", function () { row.label(n.value); });
    var prompts = [["", "default menu prompt"]].concat(PROMPTS.map(function (p) { return [p, p]; }));
    if (m.prompt && PROMPTS.indexOf(m.prompt) < 0) prompts.push([m.prompt, m.prompt + " (not in the catalogue)"]);
    row.appendChild(el("div", { class: "grid" }, [
      field("Number", n),
      field("Name", text("name", m.name, { maxlength: 64 })),
      field("Prompt", select("prompt", prompts, m.prompt), "Uploaded per language on the Voicemail page."),
      field("Language", text("lang", m.lang, { maxlength: 16, placeholder: "en" }), "Empty: en."),
      field("Timeout (seconds)", text("timeout", m.timeout || "", { type: "number", inputmode: "numeric", min: 0, max: 60 }), "Empty: 5."),
      field("Repeats", text("repeats", m.repeats || "", { type: "number", inputmode: "numeric", min: 0, max: 10 }), "Empty: 3."),
      field("On timeout", dest("on_timeout", m.on_timeout), "Empty: the menu again."),
      field("On invalid key", dest("on_invalid", m.on_invalid), "Empty: the invalid-key prompt, then the menu."),
      field("Fallback", dest("fallback", m.fallback), "After the repeats; empty: goodbye."),
    ]));
    var opts = el("div", { class: "options" }, [el("h4", {}, ["Keys"])]);
    row.appendChild(opts);
    var ol = list(opts, "Key", buildOption, m.options, {}, "Add key");
    row.label(m.number);
    row.read = function () {
      var v = JSON.parse(JSON.stringify(m));
      v.number = n.value.trim();
      ["name", "prompt", "lang", "on_timeout", "on_invalid", "fallback"].forEach(function (k) {
        var x = val(row, k);
        if (x) v[k] = x; else delete v[k];
      });
      v.timeout = num(val(row, "timeout"));
      v.repeats = num(val(row, "repeats"));
      v.options = ol.read();
      return v;
    };
    row.ptrs = function (p, note) { own(row, p, note); ol.ptrs(p + "/options", note); };
  }
  function buildCondition(row, c) {
    var n = text("number", c.number, { inputmode: "tel", maxlength: 32, required: true });
    n.addEventListener("input", function () { row.label(n.value); });
    row.appendChild(el("div", { class: "grid" }, [
      field("Number", n),
      field("Name", text("name", c.name, { maxlength: 64 })),
      field("Time zone", text("zone", c.zone, { maxlength: 64, placeholder: "Europe/Berlin" }), "Empty: the zone above."),
      field("Open: destination", dest("open", c.open)),
      field("Closed: destination", dest("closed", c.closed)),
    ]));
    var hw = el("div", { class: "hours" }, [el("h4", {}, ["Weekly hours (open)"])]);
    row.appendChild(hw);
    var hl = list(hw, "Hours", buildHours, c.hours, { days: ["mon", "tue", "wed", "thu", "fri"], from: "08:00", to: "17:00" }, "Add hours");
    var hd = el("div", { class: "holidays" }, [el("h4", {}, ["Holidays (closed)"])]);
    row.appendChild(hd);
    var dl = list(hd, "Holiday", buildHoliday, c.holidays, {}, "Add holiday");
    row.label(c.number);
    row.read = function () {
      var v = JSON.parse(JSON.stringify(c));
      v.number = n.value.trim();
      ["name", "zone"].forEach(function (k) { var x = val(row, k); if (x) v[k] = x; else delete v[k]; });
      v.open = val(row, "open");
      v.closed = val(row, "closed");
      v.hours = hl.read();
      v.holidays = dl.read();
      return v;
    };
    row.ptrs = function (p, note) { own(row, p, note); hl.ptrs(p + "/hours", note); dl.ptrs(p + "/holidays", note); };
  }

  var general = document.getElementById("ivr-general");
  var zone = text("zone", ivr.zone, { maxlength: 64, placeholder: "Europe/Berlin" });
  general.appendChild(el("div", { class: "grid" }, [field("Time zone of time conditions", zone, "IANA name; empty: the box's zone.")]));
  var menus = list(document.getElementById("ivr-menus"), "Menu", buildMenu, ivr.menus, { options: [] }, "Add menu");
  var conds = list(document.getElementById("ivr-time_conditions"), "Time condition", buildCondition, ivr.time_conditions,
    { hours: [{ days: ["mon", "tue", "wed", "thu", "fri"], from: "08:00", to: "17:00" }] }, "Add time condition");
  var dests = el("datalist", { id: "ivr-dests" });
  (tel.dataset.extensions || "").split(" ").filter(Boolean).forEach(function (x) {
    dests.appendChild(el("option", { value: x }));
    dests.appendChild(el("option", { value: "voicemail/" + x }));
  });
  form.appendChild(dests);

  function collect() {
    var ptrs = {};
    function note(p, c) { (ptrs[p] = ptrs[p] || []).push(c); }
    var v = JSON.parse(JSON.stringify(ivr));
    if (zone.value.trim()) v.zone = zone.value.trim(); else delete v.zone;
    note("/ivr/zone", zone);
    v.menus = menus.read();
    v.time_conditions = conds.read();
    menus.ptrs("/ivr/menus", note);
    conds.ptrs("/ivr/time_conditions", note);
    var body = JSON.parse(JSON.stringify(base));
    body.ivr = v;
    return { body: body, ptrs: ptrs };
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    ed.clearErrors();
    ed.save("PUT", "/api/v1/telephony", collect(), function (data) { return "Saved: version " + data.version + "."; }, "/telephony",
      "The dial plan was changed meanwhile; reload the page and edit again.");
  });
})();
