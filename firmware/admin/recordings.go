package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Recordings is the recording store and policy as the admin side uses
// them (cmd/edgepbxd adapts recording.Store and callrec.PolicyStore).
type Recordings interface {
	List(category string, limit int) []callrec.Item
	Usage() recording.Usage
	ExportWAV(id string) ([]byte, recording.Meta, error)
	Delete(id string) error
	Policy() callrec.Policy
	// SetPolicy stores p (also runs in its transaction) and applies its
	// retention to the store.
	SetPolicy(p callrec.Policy, also func(*store.Tx) error) error
}

// RecordingsView is the recordings list with the quota state.
type RecordingsView struct {
	Usage         recording.Usage `json:"usage"`
	RetentionDays map[string]int  `json:"retention_days"`
	Recordings    []callrec.Item  `json:"recordings"`
}

func recError(err error) error {
	switch {
	case errors.Is(err, recording.ErrNotFound):
		return fmt.Errorf("%w: %v", errNotFound, err)
	case errors.Is(err, callrec.ErrPolicy):
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return err
}

func (s *Server) apiRecordings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	cat := r.URL.Query().Get("category")
	if cat != "" {
		if _, err := recording.CheckID(cat + "/0-0000000000000000.rec"); err != nil {
			return fmt.Errorf("%w: category %q", errBadRequest, cat)
		}
	}
	limit := 200
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > callrec.MaxList {
			return fmt.Errorf("%w: limit 1..%d", errBadRequest, callrec.MaxList)
		}
		limit = n
	}
	days := map[string]int{}
	for _, c := range []string{callrec.Category, "voicemail"} {
		days[c] = int(recording.DefaultRetention.Hours() / 24)
	}
	for c, d := range s.recs.Policy().RetentionDays {
		days[c] = d
	}
	writeJSON(w, http.StatusOK, RecordingsView{Usage: s.recs.Usage(), RetentionDays: days, Recordings: s.recs.List(cat, limit)})
	return nil
}

// apiRecordingAudio answers a recording decrypted as WAV (16-bit PCM),
// for the player or as a download with ?download=1. The access is
// audited before the audio leaves.
func (s *Server) apiRecordingAudio(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	id, err := callRecordingID(r)
	if err != nil {
		return err
	}
	wav, _, err := s.recs.ExportWAV(id)
	if wav == nil {
		return recError(err)
	}
	action := "recording.listen"
	if r.URL.Query().Get("download") == "1" {
		action = "recording.download"
		w.Header().Set("Content-Disposition", `attachment; filename="recording-`+r.PathValue("name")+`.wav"`)
	}
	detail := ""
	if err != nil {
		detail = "truncated"
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: action, Target: id, Detail: detail}); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("Content-Length", strconv.Itoa(len(wav)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(wav)
	return nil
}

// apiDeleteRecording crypto-erases and removes a recording (the store
// overwrites the file's salt before unlinking it).
func (s *Server) apiDeleteRecording(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	id, err := callRecordingID(r)
	if err != nil {
		return err
	}
	if err := s.recs.Delete(id); err != nil {
		return recError(err)
	}
	if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "recording.delete", Target: id}); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiRecordingPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, s.recs.Policy())
	return nil
}

func (s *Server) apiSetRecordingPolicy(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	var pol callrec.Policy
	if err := decodeJSON(r, &pol); err != nil {
		return err
	}
	if err := pol.Validate(); err != nil {
		return withField(recPolicyField(pol), recError(err))
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "recording.policy",
		Detail: fmt.Sprintf("extensions=%d trunks=%d routes=%d retention=%v announce=%v", len(pol.Extensions), len(pol.Trunks), len(pol.Routes), pol.RetentionDays, pol.Announce)}
	if err := s.recs.SetPolicy(pol, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return recError(err)
	}
	writeJSON(w, http.StatusOK, s.recs.Policy())
	return nil
}

// recPolicyField names the rule of an invalid policy the refusal is about,
// as a JSON pointer into the request body, for the editor to show the
// message next to it: each rule is checked alone by callrec's own
// validation (a repeated route prefix is the second one). "" when no
// single rule fails (too many rules).
func recPolicyField(pol callrec.Policy) string {
	esc := strings.NewReplacer("~", "~0", "/", "~1")
	for _, kind := range []string{"extensions", "trunks"} {
		m := pol.Extensions
		if kind == "trunks" {
			m = pol.Trunks
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			one := callrec.Policy{Extensions: map[string]callrec.Mode{k: m[k]}}
			if one.Validate() != nil {
				return "/" + kind + "/" + esc.Replace(k)
			}
		}
	}
	seen := map[string]bool{}
	for i, r := range pol.Routes {
		if seen[r.Prefix] || (callrec.Policy{Routes: []callrec.RouteRule{{Prefix: r.Prefix, Mode: callrec.Never}}}).Validate() != nil {
			return fmt.Sprintf("/routes/%d/prefix", i)
		}
		seen[r.Prefix] = true
		if (callrec.Policy{Routes: []callrec.RouteRule{r}}).Validate() != nil {
			return fmt.Sprintf("/routes/%d/mode", i)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(pol.RetentionDays)) {
		if (callrec.Policy{RetentionDays: map[string]int{c: pol.RetentionDays[c]}}).Validate() != nil {
			return "/retention_days/" + esc.Replace(c)
		}
	}
	return ""
}

// callRecordingID is the recording a path names. Only call recordings are
// played or deleted here: a voicemail file belongs to its message record
// (/api/v1/voicemail/…), which would otherwise point at nothing.
func callRecordingID(r *http.Request) (string, error) {
	cat, name := r.PathValue("category"), r.PathValue("name")
	if cat != callrec.Category {
		return "", fmt.Errorf("%w: category %q: voicemail messages are played and deleted under /api/v1/voicemail", errNotFound, cat)
	}
	id := cat + "/" + name
	if _, err := recording.CheckID(id); err != nil {
		return "", fmt.Errorf("%w: %v", errNotFound, err)
	}
	return id, nil
}

// RecordingRetention is the retention days per category the recordings
// page sets (1..3650); the rest of the policy is kept.
type RecordingRetention map[string]int

func (s *Server) apiSetRetention(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.recs == nil {
		return errUnavailable
	}
	var req RecordingRetention
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	pol := s.recs.Policy()
	pol.RetentionDays = req
	if err := pol.Validate(); err != nil {
		return recError(err)
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "recording.retention", Detail: fmt.Sprintf("%v", map[string]int(req))}
	if err := s.recs.SetPolicy(pol, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return recError(err)
	}
	writeJSON(w, http.StatusOK, s.recs.Policy().RetentionDays)
	return nil
}

func (s *Server) recordingsPageData(r *http.Request, p auth.Principal) (any, error) {
	m := map[string]any{"Available": s.recs != nil}
	if s.recs == nil {
		return m, nil
	}
	u := s.recs.Usage()
	days := map[string]int{}
	for _, c := range []string{callrec.Category, "voicemail"} {
		days[c] = int(recording.DefaultRetention.Hours() / 24)
	}
	for c, d := range s.recs.Policy().RetentionDays {
		days[c] = d
	}
	pct := 0
	if u.Limit > 0 {
		pct = int(u.Used * 100 / u.Limit)
	}
	m["Usage"], m["RetentionDays"], m["Percent"] = u, days, pct
	m["UsedMiB"], m["LimitMiB"] = u.Used>>20, max(u.Limit, 0)>>20
	m["Items"] = s.recs.List(callrec.Category, 200)
	pol := s.recs.Policy()
	raw, err := json.Marshal(pol)
	if err != nil {
		return nil, err
	}
	// The policy editor (static/recpolicy.js) edits the rules and sends
	// the retention back unchanged.
	m["Policy"], m["PolicyJSON"] = pol, string(raw)
	return m, nil
}

// recordingsPage is the Recordings page; its template is parsed here, with
// the layout, when the route table is built (as the Calls page does).
func (s *Server) recordingsPage() func(http.ResponseWriter, *http.Request, auth.Principal) error {
	t, err := template.New("layout.html").Funcs(templateFuncs()).ParseFS(templateFS, "templates/layout.html", "templates/recordings.html")
	if err != nil {
		return func(http.ResponseWriter, *http.Request, auth.Principal) error {
			return fmt.Errorf("admin: template recordings: %w", err)
		}
	}
	if s.pages != nil {
		s.pages.t["recordings"] = t
	}
	return s.page("recordings", s.recordingsPageData)
}
