// edgepbx admin UI: forms and buttons with data-api send JSON to the API
// with the session's CSRF token. No inline script anywhere (strict CSP).
"use strict";
(function () {
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function formJSON(form) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled) return;
      if (el.type === "checkbox") {
        if (el.value && el.value !== "on") {
          out[el.name] = out[el.name] || [];
          if (el.checked) out[el.name].push(el.value);
        } else {
          out[el.name] = el.checked;
        }
      } else if (el.type === "number") {
        if (el.value !== "") out[el.name] = Number(el.value);
      } else if (el.tagName === "TEXTAREA" && form.dataset.lines === el.name) {
        out[el.name] = el.value.split("\n").map(function (s) { return s.trim(); }).filter(Boolean);
      } else if (el.type !== "submit" && el.type !== "button") {
        if (el.value !== "" || el.type === "hidden") out[el.name] = el.value;
      }
    });
    return out;
  }
  // withReauth adds the "confirm it's you" fields (#reauth-password,
  // #reauth-code) to the body of elements marked data-reauth: credential,
  // token, account and role changes need the caller's current password
  // and second factor.
  function withReauth(el, body) {
    if (!el.hasAttribute("data-reauth")) return body;
    body = body || {};
    var pw = document.getElementById("reauth-password");
    var code = document.getElementById("reauth-code");
    if (pw && pw.value) body.current_password = pw.value;
    if (code && code.value) body.current_code = code.value;
    return body;
  }
  function clearReauth() {
    ["reauth-password", "reauth-code"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.value = "";
    });
  }
  function say(el, text, bad) {
    var r = el.querySelector("[data-result]") || (el.closest("form") || document).querySelector("[data-result]");
    if (r) { r.textContent = text; r.className = bad ? "bad" : "ok"; }
  }
  function call(el, body) {
    var method = el.dataset.method || "POST";
    var opts = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
    if (body instanceof FormData) {
      opts.body = body; // multipart upload: the browser sets the boundary
    } else if (method !== "GET" && method !== "DELETE") {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body || {});
    }
    var url = el.dataset.api;
    // data-api-append names a field whose value ends the path (a new
    // room's number) instead of going in the body.
    var tail = el.dataset.apiAppend;
    if (tail && body && !(body instanceof FormData) && body[tail]) {
      url += encodeURIComponent(body[tail]);
      delete body[tail];
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (!res.ok) {
          var msg = data.detail || data.title || ("error " + res.status);
          var err = new Error(msg.charAt(0).toUpperCase() + msg.slice(1)); // the API keeps the case it was given

          err.field = data.field || "";
          throw err;
        }
        return data;
      });
    });
  }
  // fieldFor finds the control a problem+json "field" (a JSON pointer such
  // as /zones/0/prefixes/1 or /interfaces/0/gateway4) is about: by the
  // whole path, its named parts, its first or its last part.
  function fieldFor(form, ptr) {
    if (!form || !form.elements || !ptr) return null;
    var segs = ptr.split("/").slice(1).map(function (s) { return s.replace(/~1/g, "/").replace(/~0/g, "~"); });
    var named = segs.filter(function (s) { return !/^\d+$/.test(s); });
    var idx = segs.filter(function (s) { return /^\d+$/.test(s); }).map(Number);
    // The proof a data-reauth form sends comes from the page's "Confirm
    // it's you" card, outside the form.
    if (form.hasAttribute && form.hasAttribute("data-reauth") && (ptr === "/current_password" || ptr === "/current_code")) {
      var re = document.getElementById(ptr === "/current_code" ? "reauth-code" : "reauth-password");
      if (re) return re;
    }
    // The firewall editor sends one rule per service input that lists zones.
    if (segs[0] === "rules" && idx.length) {
      var rs = Array.prototype.filter.call(form.elements, function (el) { return el.name && el.name.indexOf("rule:") === 0 && words(el.value).length; });
      if (rs[idx[0]]) return rs[idx[0]];
    }
    var tries = [segs.join("."), named.join("."), segs.join("/"), named[0], named[named.length - 1]];
    for (var i = 0; i < tries.length; i++) {
      if (!tries[i]) continue;
      var el = form.elements[tries[i]];
      if (el && el.length !== undefined && !el.tagName) el = el[idx[0] || 0] || el[0];
      if (el && el.tagName) return el;
    }
    var last = named[named.length - 1];
    if (last) {
      var l = form.querySelectorAll('[name$=":' + last.replace(/"/g, "") + '"]');
      if (l.length) return l[Math.min(idx[0] || 0, l.length - 1)];
    }
    return null;
  }
  function labelOf(el) {
    var l = el.id && document.querySelector('label[for="' + el.id + '"]');
    if (!l) l = el.closest("label");
    if (l) return l.textContent.trim();
    return el.getAttribute("aria-label") || el.name;
  }
  function clearErrors(form) {
    if (!form || !form.querySelectorAll) return;
    form.querySelectorAll("[data-field-error]").forEach(function (p) { p.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
      var d = (el.getAttribute("aria-describedby") || "").split(" ").filter(function (x) { return x && x.indexOf("-err") < 0; }).join(" ");
      if (d) el.setAttribute("aria-describedby", d); else el.removeAttribute("aria-describedby");
    });
  }
  // showError puts a refusal next to the field it names (aria-describedby,
  // aria-invalid, focus) and says on the form's result line which field.
  function showError(form, e) {
    var el = fieldFor(form, e.field);
    if (!el) { say(form, e.message, true); return; }
    if (!el.id) el.id = "f-" + Math.random().toString(36).slice(2);
    var p = document.createElement("p");
    p.className = "bad field-error";
    p.id = el.id + "-err";
    p.setAttribute("data-field-error", "");
    p.textContent = e.message;
    el.insertAdjacentElement("afterend", p);
    el.setAttribute("aria-invalid", "true");
    el.setAttribute("aria-describedby", ((el.getAttribute("aria-describedby") || "") + " " + p.id).trim());
    el.focus();
    say(form, "Not saved: check " + labelOf(el) + ". " + e.message, true);
  }
  // busy disables a form's buttons (or one button) while its request runs.
  function busy(el, on) {
    var bs = el.tagName === "BUTTON" ? [el] : Array.prototype.slice.call(el.querySelectorAll("button"));
    bs.forEach(function (b) {
      if (on) { b.dataset.wasDisabled = b.disabled ? "1" : ""; b.disabled = true; b.setAttribute("aria-busy", "true"); }
      else { b.disabled = b.dataset.wasDisabled === "1"; b.removeAttribute("aria-busy"); }
    });
  }
  // A save that reloads the page says so on the next one (sessionStorage,
  // this tab only).
  function flash(text) { try { sessionStorage.setItem("edgepbx-flash", text); } catch (e) { /* storage off: no message */ } }
  (function () {
    var t = null;
    try { t = sessionStorage.getItem("edgepbx-flash"); sessionStorage.removeItem("edgepbx-flash"); } catch (e) { return; }
    var main = document.getElementById("main");
    if (!t || !main) return;
    var p = document.createElement("p");
    p.id = "flash";
    p.className = "ok saved";
    p.setAttribute("role", "status");
    p.textContent = t;
    main.insertBefore(p, main.firstChild);
  })();
  // Wide tables scroll inside their box: such a box must be reachable by
  // keyboard to scroll it.
  function scrollable() {
    document.querySelectorAll(".scroll").forEach(function (d) {
      if (d.scrollWidth > d.clientWidth + 1) {
        d.tabIndex = 0;
        d.setAttribute("role", "region");
        var c = d.querySelector("caption") || (d.closest("section") || d).querySelector("h2");
        d.setAttribute("aria-label", c ? c.textContent.trim() : "table");
      } else if (d.getAttribute("role") === "region") {
        d.removeAttribute("tabindex");
        d.removeAttribute("role");
        d.removeAttribute("aria-label");
      }
    });
  }
  scrollable();
  window.addEventListener("resize", scrollable);
  function after(el, data) {
    if (data.status === "totp_required") {
      var t = document.getElementById("totp");
      t.hidden = false;
      t.elements.challenge.value = data.challenge;
      document.getElementById("login").hidden = true;
      t.elements.code.focus();
      return;
    }
    clearReauth(); // a code works once; the password is not kept in the page
    // data-then: another script (e.g. live.js) takes the answer.
    if (el.dataset.then) {
      el.dispatchEvent(new CustomEvent("edgepbx:answer", { bubbles: true, detail: data }));
      return;
    }
    if (el.id === "totp-begin") {
      document.getElementById("totp-enrol").hidden = false;
      document.getElementById("totp-qr").src = "data:image/png;base64," + data.qr_png;
      document.getElementById("totp-secret").textContent = data.secret;
      return;
    }
    if (data.identity) {
      // The backup key exists only in this answer: offer it as a file.
      var a = document.getElementById("backup-key-file");
      a.href = URL.createObjectURL(new Blob([data.identity + "\n"], { type: "text/plain" }));
      a.download = "edgepbx-backup-key.txt";
      a.hidden = false;
      say(el, "Backup key (shown once, never stored on the box): " + data.identity, false);
      return;
    }
    if (typeof data.ok === "boolean" && typeof data.message === "string") {
      // "Test target": the answer in words; an SFTP host key not yet
      // pinned is filled in for the admin to confirm by saving.
      if (data.host_key) {
        var hk = document.getElementById("sftp-host-key");
        if (hk) hk.value = data.host_key;
        say(el.parentNode, data.message + " It is filled in above; save the SFTP target to pin it.", true);
        return;
      }
      say(el.parentNode, data.message, !data.ok);
      return;
    }
    if (data.files && el.dataset.api && /\/files$/.test(el.dataset.api)) {
      say(el.parentNode, data.files.length ? data.files.map(function (f) { return f.name + " (" + f.size + " bytes)"; }).join(", ") :
        "No backups there yet.", false);
      return;
    }
    if (data.recovery_codes) {
      document.getElementById("totp-enrol").hidden = true;
      document.getElementById("recovery").hidden = false;
      document.getElementById("recovery-codes").textContent = data.recovery_codes.join("\n");
      return;
    }
    if (data.pin) {
      say(el, "New PIN for mailbox " + data.ext + " (shown once, copy it now): " + data.pin, false);
      return;
    }
    if (data.status === "sent" && typeof data.message === "string") {
      say(el, data.message, false); // the test e-mail, in words
      return;
    }
    if (data.password) {
      say(el, "Password for " + data.user + " (shown once, copy it now): " + data.password, false);
      return;
    }
    if (el.dataset.show === "token" && data.token) {
      say(el, "Token (shown once): " + data.token, false);
      return;
    }
    if (el.dataset.download) {
      // A subject-access export: hand the answer to the browser as a file.
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
      a.download = el.dataset.download;
      a.click();
      URL.revokeObjectURL(a.href);
      say(el, "export downloaded", false);
      return;
    }
    if (el.hasAttribute && el.hasAttribute("data-network") && data.status === "pending" && movedFrom(el, data)) return;
    if (data.restriction) { window.location = "/account"; return; }
    var saved = (el.dataset.method === "PUT" || el.dataset.method === "POST") && el.tagName === "FORM" && !/^\/api\/v1\/(mailbox\/)?(login|claim|logout)/.test(el.dataset.api || "");
    if (el.dataset.next) { if (saved) flash("Saved."); window.location = el.dataset.next; return; }
    if (saved && !data.status && data.ok === undefined) { say(el, "Saved.", false); return; }
    say(el, data.status || (data.ok === false ? "FAILED: " + data.error : data.ok ? "chain verified, " + data.entries + " entries" : "done"), data.ok === false);
  }
  // policyJSON turns the firewall editor into a netfw.Access object.
  function words(s) { return s.split(/[\s,]+/).filter(Boolean); }
  function policyJSON(form) {
    var out = { zones: [], rules: [], allowlist: [], allow_admin_from_any: false };
    form.elements.zones.value.split("\n").forEach(function (line) {
      var w = words(line);
      if (w.length) out.zones.push({ name: w[0], prefixes: w.slice(1) });
    });
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && el.name.indexOf("rule:") === 0) {
        var z = words(el.value);
        if (z.length) out.rules.push({ service: el.name.slice(5), zones: z });
      }
    });
    out.allowlist = words(form.elements.allowlist.value);
    out.allow_admin_from_any = form.elements.allow_admin_from_any.checked;
    return out;
  }
  // movedFrom: the network change just accepted takes away the address this
  // page was opened at (one of the box's, data-live); then, instead of
  // reloading here, it says where to open the page to confirm.
  function movedFrom(form, data) {
    var here = location.hostname.replace(/^\[|\]$/g, ""), live = words(form.dataset.live || ""), next = [];
    networkJSON(form).interfaces.forEach(function (i) { (i.addresses || []).forEach(function (a) { next.push(a.split("/")[0]); }); });
    if (live.indexOf(here) < 0 || next.indexOf(here) >= 0) return false;
    var r = form.querySelector("[data-result]");
    r.textContent = "Accepted: the box leaves this address in a moment. " + (next.length ? "Open " : "Open this page at the box's new address (see its console)");
    next.forEach(function (a, i) {
      var l = document.createElement("a");
      l.href = "https://" + (a.indexOf(":") >= 0 ? "[" + a + "]" : a) + (location.port ? ":" + location.port : "") + "/system";
      l.textContent = l.href;
      if (i) r.append(" or ");
      r.append(l);
    });
    r.append(" and confirm there within " + data.revert_in_seconds + " s, or the previous network comes back by itself.");
    r.className = "ok";
    return true;
  }
  // networkJSON turns the System page's network form into a netspec.Network.
  function networkJSON(form) {
    var out = { hostname: form.elements.hostname.value.trim(), interfaces: [], vlans: [], dns: words(form.elements.dns.value) };
    form.querySelectorAll("fieldset[data-nic]").forEach(function (fs) {
      var n = fs.dataset.nic, el = function (k) { return form.elements["nic:" + n + ":" + k].value.trim(); };
      var mode = el("mode");
      if (!mode) return;
      var it = { name: n, mode: mode };
      if (mode === "static") {
        it.addresses = words(el("addresses"));
        if (el("gateway4")) it.gateway4 = el("gateway4");
        if (el("gateway6")) it.gateway6 = el("gateway6");
      }
      out.interfaces.push(it);
    });
    form.elements.vlans.value.split("\n").forEach(function (line) {
      var w = words(line);
      if (!w.length) return;
      var v = { id: Number(w[0]), parent: w[1] || "", mode: w[2] || "" };
      if (w.length > 3) v.addresses = w.slice(3);
      out.vlans.push(v);
    });
    return out;
  }
  function timeJSON(form) {
    return { ntp: words(form.elements.ntp.value), time_zone: form.elements.time_zone.value.trim() };
  }
  // Pending firewall changes count down to their automatic revert.
  var cds = document.querySelectorAll("[data-countdown]");
  if (cds.length) {
    var left = Number(cds[0].dataset.countdown);
    var timer = setInterval(function () {
      left = Math.max(0, left - 1);
      Array.prototype.forEach.call(cds, function (c) { c.textContent = String(left); });
      if (left === 0) {
        clearInterval(timer);
        setTimeout(function () { window.location.reload(); }, 3000);
      }
    }, 1000);
  }
  // restore uploads the chosen backup file as the raw body (streamed to
  // disk on the box), then asks for the restore with the key or passphrase.
  function restore(f) {
    var file = f.elements.file.files[0];
    var kind = f.elements.remote_kind ? f.elements.remote_kind.value : "";
    if (kind) { restoreRemote(f, kind); return; }
    if (!file) { say(f, "choose a backup file", true); return; }
    say(f, "uploading " + file.size + " bytes…", false);
    fetch("/api/v1/backups/upload", { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/octet-stream" }, body: file })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (d) {
          if (!res.ok) throw new Error(d.detail || d.title || ("error " + res.status));
          var body = formJSON(f);
          delete body.file;
          body.upload = d.upload;
          say(f, "checking and restoring…", false);
          return call(f, withReauth(f, body));
        });
      })
      .then(function (d) { clearReauth(); f.reset(); say(f, d.status, false); }, function (e) { say(f, e.message, true); });
  }
  // restoreRemote copies the named backup from a target into an upload on
  // the box, then restores it like an uploaded file.
  function restoreRemote(f, kind) {
    say(f, "fetching from the " + kind + " target…", false);
    fetch("/api/v1/backups/targets/" + kind + "/fetch", { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json" },
      body: JSON.stringify({ name: f.elements.remote_name.value.trim() }) })
      .then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (d) {
          if (!res.ok) throw new Error(d.detail || d.title || ("error " + res.status));
          var body = formJSON(f);
          ["file", "remote_kind", "remote_name"].forEach(function (k) { delete body[k]; });
          body.upload = d.upload;
          say(f, "checking and restoring…", false);
          return call(f, withReauth(f, body));
        });
      })
      .then(function (d) { clearReauth(); f.reset(); say(f, d.status, false); }, function (e) { say(f, e.message, true); });
  }
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    if (!f.dataset.api) return;
    ev.preventDefault();
    var body;
    if (f.hasAttribute("data-restore")) {
      restore(f);
      return;
    }
    if (f.hasAttribute("data-multipart")) {
      body = new FormData(f);
    } else {
      body = withReauth(f, f.hasAttribute("data-policy") ? policyJSON(f) : f.hasAttribute("data-network") ? networkJSON(f) :
        f.hasAttribute("data-time") ? timeJSON(f) : formJSON(f));
    }
    // data-retry: a firewall confirmation refused because it came on a
    // connection opened before the change (a browser may keep a spare
    // one) closed that connection; the next try opens a new one.
    var tries = Number(f.dataset.retry || 0);
    // A new address takes effect before the answer, which then cannot
    // come back on this connection: say where to confirm first.
    if (f.hasAttribute("data-network")) say(f, "Applying. If the box's address changes, open this page at the new address and confirm there within 120 s.", false);
    clearErrors(f);
    busy(f, true);
    (function send() {
      call(f, body).then(function (d) { busy(f, false); after(f, d); }, function (e) {
        if (tries-- > 0 && /on a new connection/.test(e.message)) { setTimeout(send, 250); return; }
        busy(f, false);
        showError(f, e);
      });
    })();
  });
  document.addEventListener("change", function (ev) {
    var f = ev.target;
    if (!f.dataset || !f.dataset.into || !f.files || !f.files[0]) return;
    if (f.files[0].size > 131072) { say(f.form, "file too large", true); return; }
    f.files[0].text().then(function (t) { f.form.elements[f.dataset.into].value = t; });
  });
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-api]");
    if (!b) return;
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    busy(b, true);
    call(b, withReauth(b)).then(function (d) { busy(b, false); after(b, d); }, function (e) { busy(b, false); say(b.parentNode, e.message, true); });
  });
  // For the pages' own scripts (sipsettings.js): refusals next to their field.
  window.edgepbxForms = { showError: showError, clearErrors: clearErrors };
})();
