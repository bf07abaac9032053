// The System page's Firmware section: a bundle upload streamed to the box
// (the browser's upload progress, then the box's own written/total while
// its init writes the slot) and the pulled-update policy.
(function () {
  "use strict";
  function csrf() {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute("content") : "";
  }
  function say(f, msg, bad) {
    var r = f.querySelector("[data-result]");
    r.textContent = msg;
    r.className = bad ? "bad" : "";
  }
  var up = document.getElementById("fw-upload");
  if (up) up.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var file = up.elements.file.files[0];
    if (!file) { say(up, "choose an update bundle", true); return; }
    var bar = document.getElementById("fw-progress");
    bar.hidden = false; bar.value = 0;
    var x = new XMLHttpRequest();
    var poll = setInterval(function () {
      fetch("/api/v1/update", { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (st) {
        if (st.installing && st.total > 0) say(up, "the box wrote " + st.written + " of " + st.total + " bytes", false);
      }, function () {});
    }, 1000);
    x.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); say(up, "sent " + e.loaded + " of " + e.total + " bytes", false); }
    };
    x.onloadend = function () {
      clearInterval(poll);
      var d = {};
      try { d = JSON.parse(x.responseText); } catch (e) { /* not JSON */ }
      if (x.status === 200) { bar.value = 100; say(up, d.status, false); return; }
      say(up, (d.title || ("error " + x.status)) + (d.reason ? " (" + d.reason + ")" : "") + ": " + (d.detail || ""), true);
    };
    x.open("POST", "/api/v1/update");
    x.setRequestHeader("X-CSRF-Token", csrf());
    x.setRequestHeader("Content-Type", "application/octet-stream");
    x.send(file);
  });
  var pol = document.getElementById("fw-policy");
  if (pol) pol.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { mode: pol.elements.mode.value, window: { start: pol.elements.start.value, hours: Number(pol.elements.hours.value) } };
    fetch("/api/v1/update/policy", { method: "PUT", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() }, body: JSON.stringify(body) })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (d) {
          if (!r.ok) throw new Error(d.detail || d.title || ("error " + r.status));
          say(pol, "saved", false);
        });
      }).catch(function (e) { say(pol, e.message, true); });
  });
})();
