// edgepbx editable rows: what the dial plan (telephony.js), IVR (ivr.js)
// and recording rule (recpolicy.js) editors share: building fields with
// their label, hint and error line, rows with a legend and a Delete
// button named after it, and a save that shows a refusal (problem+json
// "field", a JSON pointer) next to the controls that edit it. Loaded
// before them; no inline script (strict CSP).
"use strict";
window.edgepbxRows = (function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  // el builds an element; attributes false, null or undefined are left
  // out, true is an empty attribute.
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] === false || attrs[k] === null || attrs[k] === undefined) return;
      e.setAttribute(k, attrs[k] === true ? "" : attrs[k]);
    });
    (kids || []).forEach(function (k) { e.appendChild(typeof k === "string" ? document.createTextNode(k) : k); });
    return e;
  }
  function num(v) { return v === "" ? 0 : Number(v); }
  function text(key, value, attrs) {
    var a = { type: "text", autocomplete: "off", spellcheck: "false" };
    Object.keys(attrs || {}).forEach(function (k) { a[k] = attrs[k]; });
    var i = el("input", a);
    i.value = value === undefined || value === null ? "" : String(value);
    i.dataset.key = key;
    return i;
  }
  function select(key, options, value) {
    var s = el("select", {}, options.map(function (o) { return el("option", { value: o[0] }, [o[1]]); }));
    s.value = value || options[0][0];
    s.dataset.key = key;
    return s;
  }

  // editor is one editing form: ids under its own prefix (several editors
  // share a page), its status line, its fields and their errors.
  function editor(form, prefix, statusID) {
    var seq = 0;
    function id() { return prefix + (++seq); }
    // errorLine is the hidden error line of control (or group) c.
    function errorLine(c, eid) {
      c.dataset.err = eid + "-err";
      return el("p", { class: "bad field-error", id: eid + "-err", hidden: true });
    }
    // field wraps a control with its label, an optional hint and an error
    // line; the control names both in aria-describedby.
    function field(label, control, hint) {
      var fid = id();
      control.id = fid;
      var wrap = el("div", { class: "field" }, [el("label", { for: fid }, [label]), control]);
      if (hint) {
        wrap.appendChild(el("p", { class: "hint", id: fid + "-hint" }, [hint]));
        control.dataset.hint = fid + "-hint";
        control.setAttribute("aria-describedby", fid + "-hint");
      }
      wrap.appendChild(errorLine(control, fid));
      return wrap;
    }
    function status(msg, bad) {
      var s = document.getElementById(statusID);
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
    // showError puts msg under the first control and links every control
    // of the field to the message.
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
    // row is a fieldset with a legend and a Delete button named after it
    // (screen readers list many buttons by name); the caller appends del
    // after the row's fields and handles its click.
    function row(title) {
      var r = el("fieldset", { class: "row" }, [el("legend", {}, [title])]);
      var del = el("button", { type: "button", class: "danger" }, ["Delete"]);
      r.del = del;
      r.label = function (what, full) {
        var l = full ? what : title + (what ? ": " + what : "");
        r.querySelector(":scope > legend").textContent = l;
        del.setAttribute("aria-label", "Delete " + l);
      };
      return r;
    }
    // save sends c.body (collect's answer, with ptrs: JSON pointer →
    // controls) and on success says ok and goes to next; a refusal is
    // shown next to the controls of its pointer or the nearest one above
    // it (one peer prefix belongs to its list's control). conflict words
    // a 409.
    function save(method, url, c, ok, next, conflict) {
      status("Saving…", false);
      fetch(url, { method: method, credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() }, body: JSON.stringify(c.body) })
        .then(function (res) {
          return res.json().catch(function () { return {}; }).then(function (data) {
            if (res.ok) {
              status(ok(data), false);
              window.location = next;
              return;
            }
            var msg = data.detail || data.title || ("error " + res.status);
            if (res.status === 409 && conflict) msg = conflict + " (" + msg + ")";
            var p = data.field || "";
            while (p && !c.ptrs[p]) p = p.slice(0, p.lastIndexOf("/"));
            if (p) showError(c.ptrs[p], msg);
            status("Not saved: " + msg, true);
          });
        }, function (e) { status("Not saved: " + e.message, true); });
    }
    return { id: id, field: field, errorLine: errorLine, status: status, clearErrors: clearErrors, showError: showError, row: row, save: save };
  }
  return { csrf: csrf, el: el, num: num, text: text, select: select, editor: editor };
})();
