// The fleet page: every value from a box is set as text, never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
function query(format) {
  const p = new URLSearchParams();
  for (const k of ["q", "status", "flag", "min_offline"]) {
    const v = $(k).value;
    if (v !== "" && !(k === "min_offline" && v === "0")) p.set(k, v);
  }
  p.set("limit", "1000");
  if (format) p.set("format", format);
  return "/admin/fleet?" + p.toString();
}
async function get(format) {
  const r = await fetch(query(format), { headers: { Authorization: "Bearer " + $("token").value } });
  if (!r.ok) throw new Error(r.status + " " + (await r.text()));
  return r;
}
async function show(ev) {
  ev.preventDefault();
  try {
    const data = await (await get("")).json();
    const body = $("t").tBodies[0];
    body.replaceChildren();
    for (const b of data.boxes) {
      const flags = [b.clone && "clone", b.audit_flag && "audit", b.rollback_flag && "rollback"].filter(Boolean).join(" ");
      const tr = body.insertRow();
      for (const v of [b.licence, b.serial, b.install, b.fw, b.last_checkin, b.days_since_checkin, b.status, flags, (b.advisories || []).join(" ")]) {
        tr.insertCell().textContent = String(v);
      }
    }
    $("msg").textContent = data.boxes.length + " of " + data.total + " boxes";
  } catch (e) {
    $("msg").textContent = "error: " + e.message;
  }
}
async function csv() {
  try {
    const blob = await (await get("csv")).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "fleet.csv";
    a.click();
    URL.revokeObjectURL(a.href);
  } catch (e) {
    $("msg").textContent = "error: " + e.message;
  }
}
$("f").addEventListener("submit", show);
$("csv").addEventListener("click", csv);
