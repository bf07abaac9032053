package admin

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// testRecordings is the real recording store and policy store over the
// env's database, as cmd/edgepbxd adapts them (admin.Recordings).
type testRecordings struct {
	store  *recording.Store
	policy *callrec.PolicyStore
}

func (r *testRecordings) List(category string, limit int) []callrec.Item {
	return callrec.List(r.store, category, limit)
}
func (r *testRecordings) Usage() recording.Usage { return r.store.Usage() }
func (r *testRecordings) ExportWAV(id string) ([]byte, recording.Meta, error) {
	return r.store.ExportWAV(id)
}
func (r *testRecordings) Delete(id string) error { return r.store.Delete(id) }
func (r *testRecordings) Policy() callrec.Policy { return r.policy.Get() }
func (r *testRecordings) SetPolicy(p callrec.Policy, also func(*store.Tx) error) error {
	if err := r.policy.Set(p, also); err != nil {
		return err
	}
	return r.store.SetRetention(p.Retention())
}

// withRecordings gives e's server a recording store (the pages then show
// the Recordings page with its editors).
func withRecordings(t testing.TB, e *env) *testRecordings {
	t.Helper()
	keys, err := recording.StaticKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(t.TempDir(), "rec"), Keys: keys, Quota: 64 << 20, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := callrec.OpenPolicy(e.db)
	if err != nil {
		t.Fatal(err)
	}
	r := &testRecordings{store: rs, policy: ps}
	e.srv.recs = r
	return r
}

// withMediaApps fills c with a menu and a time condition and e with a
// recording policy, so the every-page tests walk the IVR and recording
// editors with rows in them (extension 1002 must exist).
func withMediaApps(t testing.TB, e *env, c *pbxconfig.Telephony) {
	t.Helper()
	c.IVR = ivr.Config{
		Menus: []ivr.Menu{{Number: "500", Name: "Reception", Options: []ivr.Option{{Key: "1", Dest: "1002"}, {Key: "9", Dest: "voicemail/1002"}}, Fallback: "1002"}},
		TimeConditions: []ivr.TimeCondition{{Number: "510", Name: "Office hours", Zone: "Europe/Berlin",
			Hours:    []ivr.Hours{{Days: []string{"mon", "tue", "wed", "thu", "fri"}, From: "08:00", To: "17:00"}},
			Holidays: []ivr.Holiday{{Name: "New year", From: "2027-01-01"}}, Open: "500", Closed: "voicemail/1002"}},
	}
	r := withRecordings(t, e)
	if err := r.SetPolicy(callrec.Policy{Extensions: map[string]callrec.Mode{"1002": callrec.OnDemand},
		Routes: []callrec.RouteRule{{Prefix: "00", Mode: callrec.Always}}}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserIVREditor creates a menu and a time condition with the dial
// plan page's IVR editor in headless Chromium at a phone's width, reads
// them back from the API, and has a bad value refused next to its field
// with nothing saved.
func TestBrowserIVREditor(t *testing.T) {
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	p.Viewport(360, 780)
	p.Open(base+"/telephony", "/telephony")

	menu := `#ivr-menus > .rows > fieldset.row:last-of-type`
	tc := `#ivr-time_conditions > .rows > fieldset.row:last-of-type`
	key := func(row, k string) string { return fmt.Sprintf(`%s > .grid [data-key=%q]`, row, k) }
	p.Click(`#ivr-menus > p > button`)
	p.Fill(map[string]string{key(menu, "number"): "500", key(menu, "name"): "Reception", key(menu, "prompt"): "menu",
		key(menu, "lang"): "de", key(menu, "timeout"): "8", key(menu, "repeats"): "2", key(menu, "fallback"): "voicemail/1002"})
	for i, d := range []string{"1002", "voicemail/1002"} {
		p.Click(menu + ` .options > p > button`)
		opt := menu + ` .options > .rows > fieldset.row:last-of-type`
		p.Fill(map[string]string{key(opt, "key"): fmt.Sprint(i + 1), key(opt, "dest"): d})
	}
	p.Click(`#ivr-time_conditions > p > button`) // comes with Mon–Fri 08:00–17:00
	p.Fill(map[string]string{key(tc, "number"): "510", key(tc, "name"): "Office", key(tc, "zone"): "Europe/Vienna",
		key(tc, "open"): "500", key(tc, "closed"): "voicemail/1002"})
	p.Eval(`document.querySelector('`+tc+` .hours fieldset.row fieldset.days input[value="sat"]').click()`, nil)
	p.Click(tc + ` .holidays > p > button`)
	hol := tc + ` .holidays > .rows > fieldset.row:last-of-type`
	p.Fill(map[string]string{key(hol, "name"): "Christmas", key(hol, "from"): "2026-12-24", key(hol, "to"): "2026-12-26"})
	p.SubmitNav("#ivr-edit")

	// Read back through the API, as a client would.
	c := e.client("192.0.2.60")
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	var cur pbxconfig.Telephony
	if err := json.Unmarshal(c.must(200, "GET", "/api/v1/telephony", nil).body, &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Version != 1 || len(cur.IVR.Menus) != 1 || len(cur.IVR.TimeConditions) != 1 {
		t.Fatalf("saved %+v", cur.IVR)
	}
	m := cur.IVR.Menus[0]
	if m.Number != "500" || m.Name != "Reception" || m.Prompt != "menu" || m.Lang != "de" || m.Timeout != 8 || m.Repeats != 2 ||
		m.Fallback != "voicemail/1002" || len(m.Options) != 2 || m.Options[0] != (ivr.Option{Key: "1", Dest: "1002"}) ||
		m.Options[1] != (ivr.Option{Key: "2", Dest: "voicemail/1002"}) {
		t.Errorf("menu %+v", m)
	}
	x := cur.IVR.TimeConditions[0]
	if x.Number != "510" || x.Name != "Office" || x.Zone != "Europe/Vienna" || x.Open != "500" || x.Closed != "voicemail/1002" ||
		len(x.Hours) != 1 || strings.Join(x.Hours[0].Days, " ") != "mon tue wed thu fri sat" || x.Hours[0].From != "08:00" || x.Hours[0].To != "17:00" ||
		len(x.Holidays) != 1 || x.Holidays[0] != (ivr.Holiday{Name: "Christmas", From: "2026-12-24", To: "2026-12-26"}) {
		t.Errorf("time condition %+v", x)
	}
	if !e.auditHas("telephony.set", "ok") {
		t.Error("no audit entry")
	}
	// The reloaded page lists both and the editor has them.
	if html := p.Str(`document.getElementById("ivr").textContent`); !strings.Contains(html, "Reception") || !strings.Contains(html, "Office") {
		t.Errorf("listing %q", html)
	}
	if v := p.Str(`document.querySelector('` + key(menu, "prompt") + `').value`); v != "menu" {
		t.Errorf("prompt after reload %q", v)
	}

	// An unknown destination in a key: refused, shown under that key's
	// destination, focused; nothing saved.
	opt := menu + ` .options > .rows > fieldset.row:last-of-type`
	p.Fill(map[string]string{key(opt, "dest"): "7777"})
	p.Submit("#ivr-edit", "#ivr-status")
	p.WaitFor(`document.querySelector("#ivr-status").textContent.startsWith("Not saved")`)
	ctl := key(opt, "dest")
	var got struct{ Invalid, Err, Active string }
	p.Eval(fmt.Sprintf(`(() => { const c = document.querySelector(%q), e = document.getElementById(c.dataset.err);
		return {invalid: c.getAttribute("aria-invalid") || "", err: e.hidden ? "" : e.textContent, active: document.activeElement === c ? "yes" : ""}; })()`, ctl), &got)
	if got.Invalid != "true" || !strings.Contains(got.Err, "7777") || got.Active != "yes" {
		t.Errorf("refusal not at the destination: %+v (status %q)", got, p.Str(`document.querySelector("#ivr-status").textContent`))
	}
	if e.tel.Current().Version != 1 {
		t.Error("a refused change was saved")
	}

	// Delete the menu's second key and the holiday; saved.
	p.Fill(map[string]string{key(opt, "dest"): "1002"})
	p.Click(hol + ` > button.danger`)
	p.SubmitNav("#ivr-edit")
	cur = e.tel.Current()
	if cur.Version != 2 || len(cur.IVR.TimeConditions[0].Holidays) != 0 || cur.IVR.Menus[0].Options[1].Dest != "1002" {
		t.Errorf("second save %+v", cur.IVR)
	}
}

// TestBrowserRecordingPolicy edits the recording rules on the Recordings
// page in headless Chromium, reads them back from the API, and has a bad
// route prefix refused next to its field.
func TestBrowserRecordingPolicy(t *testing.T) {
	e, p, base := browserBox(t)
	r := withRecordings(t, e)
	if err := r.SetPolicy(callrec.Policy{RetentionDays: map[string]int{"call": 30}}, nil); err != nil {
		t.Fatal(err)
	}
	p.Viewport(360, 780)
	p.Open(base+"/recordings", "/recordings")
	row := `#rec-rules > fieldset.row:last-of-type`
	sel := func(k string) string { return fmt.Sprintf(`%s [data-key=%q]`, row, k) }
	for _, rule := range [][3]string{{"extensions", "1002", "never"}, {"trunks", "itsp", "always"}, {"routes", "00", "on-demand"}} {
		p.Click(`#rec-add`)
		p.Fill(map[string]string{sel("kind"): rule[0], sel("name"): rule[1], sel("mode"): rule[2]})
	}
	p.Click(`#rec-announce`) // both parties hear the recording notice
	p.SubmitNav("#rec-policy")

	c := e.client("192.0.2.61")
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	var pol callrec.Policy
	if err := json.Unmarshal(c.must(200, "GET", "/api/v1/recordings/policy", nil).body, &pol); err != nil {
		t.Fatal(err)
	}
	if pol.Extensions["1002"] != callrec.Never || pol.Trunks["itsp"] != callrec.Always || len(pol.Routes) != 1 ||
		pol.Routes[0] != (callrec.RouteRule{Prefix: "00", Mode: callrec.OnDemand}) || pol.RetentionDays["call"] != 30 || !pol.Announce {
		t.Fatalf("policy %+v", pol)
	}
	if st := p.Str(`document.querySelector("#rec-announce-state").textContent`); !strings.Contains(st, "on (both parties") {
		t.Errorf("announcement state shown: %q", st)
	}
	if !e.auditHas("recording.policy", "ok") {
		t.Error("no audit entry")
	}
	if rows := p.Str(`String(document.querySelectorAll("#rec-rules > fieldset.row").length)`); rows != "3" {
		t.Errorf("rules after reload: %s", rows)
	}

	// A second rule for prefix 00: refused at that prefix, nothing saved.
	p.Click(`#rec-add`)
	p.Fill(map[string]string{sel("kind"): "routes", sel("name"): "00", sel("mode"): "never"})
	p.Submit("#rec-policy", "#rec-status")
	p.WaitFor(`document.querySelector("#rec-status").textContent.startsWith("Not saved")`)
	var got struct{ Invalid, Err string }
	p.Eval(fmt.Sprintf(`(() => { const c = document.querySelector(%q), e = document.getElementById(c.dataset.err);
		return {invalid: c.getAttribute("aria-invalid") || "", err: e.hidden ? "" : e.textContent}; })()`, sel("name")), &got)
	if got.Invalid != "true" || !strings.Contains(got.Err, "00") {
		t.Errorf("refusal not at the prefix: %+v", got)
	}
	if len(r.Policy().Routes) != 1 {
		t.Error("a refused policy was saved")
	}
	// A second rule for extension 1002 would replace the first in the
	// policy's map: the editor refuses it at its name.
	p.Click(row + ` > button.danger`)
	p.Click(`#rec-add`)
	p.Fill(map[string]string{sel("kind"): "extensions", sel("name"): "1002", sel("mode"): "always"})
	p.Submit("#rec-policy", "#rec-status")
	p.WaitFor(`document.querySelector("#rec-status").textContent.startsWith("Not saved")`)
	p.Eval(fmt.Sprintf(`(() => { const c = document.querySelector(%q), e = document.getElementById(c.dataset.err);
		return {invalid: c.getAttribute("aria-invalid") || "", err: e.hidden ? "" : e.textContent}; })()`, sel("name")), &got)
	if got.Invalid != "true" || !strings.Contains(got.Err, "already a rule for 1002") {
		t.Errorf("second rule for 1002: %+v", got)
	}
	if r.Policy().Extensions["1002"] != callrec.Never {
		t.Error("the second rule replaced the first")
	}
}

// FuzzRecPolicyField: for any policy body, the field named is "" for a
// valid policy and otherwise a pointer to a rule the body has.
func FuzzRecPolicyField(f *testing.F) {
	f.Add([]byte(`{"extensions":{"201":"never","2 1":"always"},"routes":[{"prefix":"00","mode":"always"},{"prefix":"00","mode":"x"}]}`))
	f.Add([]byte(`{"trunks":{"a/b~c":"on-demand"},"retention_days":{"call":0}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		var pol callrec.Policy
		if json.Unmarshal(b, &pol) != nil {
			return
		}
		field := recPolicyField(pol)
		if pol.Validate() == nil {
			if field != "" {
				t.Fatalf("valid policy, field %q", field)
			}
			return
		}
		if field == "" {
			return // too many rules: no single one to blame
		}
		unesc := strings.NewReplacer("~1", "/", "~0", "~")
		segs := strings.SplitN(field, "/", 3)
		if len(segs) != 3 || segs[0] != "" {
			t.Fatalf("field %q", field)
		}
		name := unesc.Replace(segs[2])
		var ok bool
		switch segs[1] {
		case "extensions":
			_, ok = pol.Extensions[name]
		case "trunks":
			_, ok = pol.Trunks[name]
		case "retention_days":
			_, ok = pol.RetentionDays[name]
		case "routes":
			var i int
			var what string
			if _, err := fmt.Sscanf(strings.Replace(segs[2], "/", " ", 1), "%d %s", &i, &what); err == nil {
				ok = i >= 0 && i < len(pol.Routes) && (what == "prefix" || what == "mode")
			}
		}
		if !ok {
			t.Fatalf("field %q names no rule of %+v", field, pol)
		}
	})
}

// TestRecordingPolicyField: a refused policy names the rule it is about
// (the editor shows the message there) and changes nothing.
func TestRecordingPolicyField(t *testing.T) {
	e, admin := claimed(t)
	r := withRecordings(t, e)
	ok := callrec.Policy{Extensions: map[string]callrec.Mode{"201": callrec.Never}}
	admin.must(200, "PUT", "/api/v1/recordings/policy", ok)
	for _, tt := range []struct {
		name  string
		pol   callrec.Policy
		field string
	}{
		{"bad extension mode", callrec.Policy{Extensions: map[string]callrec.Mode{"201": "sometimes", "202": callrec.Always}}, "/extensions/201"},
		{"bad extension name", callrec.Policy{Extensions: map[string]callrec.Mode{"2 01": callrec.Always}}, "/extensions/2 01"},
		{"bad trunk name", callrec.Policy{Trunks: map[string]callrec.Mode{"it/sp": callrec.Always}}, "/trunks/it~1sp"},
		{"bad prefix", callrec.Policy{Routes: []callrec.RouteRule{{Prefix: "00", Mode: callrec.Always}, {Prefix: "0x", Mode: callrec.Always}}}, "/routes/1/prefix"},
		{"repeated prefix", callrec.Policy{Routes: []callrec.RouteRule{{Prefix: "00", Mode: callrec.Always}, {Prefix: "00", Mode: callrec.Never}}}, "/routes/1/prefix"},
		{"bad route mode", callrec.Policy{Routes: []callrec.RouteRule{{Prefix: "00", Mode: "loud"}}}, "/routes/0/mode"},
		{"bad retention", callrec.Policy{RetentionDays: map[string]int{"call": 0}}, "/retention_days/call"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := admin.do("PUT", "/api/v1/recordings/policy", tt.pol)
			if res.code != 400 || res.js["field"] != tt.field {
				t.Fatalf("= %d field %v, want 400 %s: %s", res.code, res.js["field"], tt.field, res.body)
			}
			if got := r.Policy(); len(got.Extensions) != 1 || got.Extensions["201"] != callrec.Never || len(got.Routes) != 0 {
				t.Fatalf("refused policy changed the stored one: %+v", got)
			}
		})
	}
}
