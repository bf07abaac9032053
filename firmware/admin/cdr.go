package admin

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Call records live in the same store (firmware/cdr owns the buckets), so
// the admin side reads them through cdr's API without a dependency of its
// own. Trunk registration state comes from Deps.TrunkStatus.

// TrunkStatus reports the trunks' live state (edgepbxd's trunk manager).
type TrunkStatus interface {
	TrunkStates() []TrunkState
}

// TrunkState is one trunk as the SIP edge sees it now.
type TrunkState struct {
	Name      string `json:"name"`
	Auth      string `json:"auth"` // ip or register
	Transport string `json:"transport"`
	Registrar string `json:"registrar,omitempty"`
	// State: "ip" (identified by address, nothing to register),
	// "registering", "registered", "failed", "stopped".
	State       string    `json:"state"`
	LastError   string    `json:"last_error,omitempty"`
	Expires     time.Time `json:"expires,omitzero"`      // registration valid until
	LastSuccess time.Time `json:"last_success,omitzero"` // last 2xx from the registrar
	Peers       []string  `json:"peers,omitempty"`       // source prefixes that identify it
}

func (s *Server) trunkStates() []TrunkState {
	if s.trunks == nil {
		return []TrunkState{}
	}
	l := s.trunks.TrunkStates()
	if l == nil {
		l = []TrunkState{}
	}
	return l
}

func (s *Server) callRecords() *cdr.Store { return cdr.New(s.db) }

// cdrQuery reads the filters of the Calls page and the API.
func cdrQuery(r *http.Request) (cdr.Query, error) {
	if len(r.URL.RawQuery) > 2048 {
		return cdr.Query{}, errors.Join(errBadRequest, errors.New("query string too long"))
	}
	q, err := cdr.ParseQuery(r.URL.Query())
	if err != nil {
		return cdr.Query{}, errors.Join(errBadRequest, err)
	}
	return q, nil
}

func (s *Server) apiCDR(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := cdrQuery(r)
	if err != nil {
		return err
	}
	page, err := s.callRecords().Query(q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

func (s *Server) apiCDRExport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	q, err := cdrQuery(r)
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = cdr.FormatCSV
	}
	ct := map[string]string{cdr.FormatJSONLines: "application/jsonl", cdr.FormatCSV: "text/csv; charset=utf-8"}[format]
	if ct == "" {
		return errors.Join(errBadRequest, errors.New("format must be csv or jsonl"))
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="edgepbx-calls.`+format+`"`)
	n, err := s.callRecords().Export(w, format, q)
	if err != nil {
		// Headers are out: the body ends short; the log says why.
		s.log.Error("cdr export", "err", err, "records", n)
	}
	// Call records are personal data: who exported them is audited.
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "cdr.export", Detail: fmt.Sprintf("%s, %d records", format, n)})
	return nil
}

// RetentionRequest is the body of PUT /api/v1/cdr/retention. Shortening
// the retention deletes call records: it needs the caller's current
// password and second factor (as on the privacy page).
type RetentionRequest struct {
	cdr.Retention
	auth.Proof
}

func (s *Server) apiCDRRetention(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	rt, err := s.callRecords().Retention()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rt)
	return nil
}

func (s *Server) apiSetCDRRetention(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req RetentionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	recs := s.callRecords()
	before, err := recs.Retention()
	if err != nil {
		return err
	}
	if req.Days != 0 && (before.Days == 0 || req.Days < before.Days) {
		if err := s.auth.Reauthenticate(r.Context(), p, clientOf(r), req.Proof, "cdr.retention"); err != nil {
			return err
		}
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "cdr.retention", Before: before, After: req.Retention}
	// The setting and its audit entry commit together (a shorter
	// retention deletes records: who set it must survive a power cut).
	err = s.db.Update(func(tx *store.Tx) error {
		if err := cdr.SetRetentionTx(tx, req.Retention); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		ev.Outcome, ev.Detail = audit.Failed, err.Error()
		_ = s.audit.Record(ev)
		if errors.Is(err, cdr.ErrRetention) {
			return withField("/days", errors.Join(errBadRequest, err))
		}
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "saved", "days": req.Days})
	return nil
}

func (s *Server) apiTrunkStatus(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	writeJSON(w, http.StatusOK, map[string]any{"trunks": s.trunkStates()})
	return nil
}

// callsPage is the Calls page: trunk status, filters, records and export
// links. Its template is parsed here, with the layout, when the route
// table is built.
func (s *Server) callsPage() func(http.ResponseWriter, *http.Request, auth.Principal) error {
	t, err := template.New("layout.html").Funcs(templateFuncs()).ParseFS(templateFS, "templates/layout.html", "templates/cdr.html")
	if err != nil {
		return func(http.ResponseWriter, *http.Request, auth.Principal) error {
			return fmt.Errorf("admin: template cdr: %w", err)
		}
	}
	if s.pages != nil {
		s.pages.t["cdr"] = t
	}
	return s.page("cdr", s.callsData)
}

// callRow is one record as the Calls page shows it.
type callRow struct {
	cdr.Record
	Duration string
}

func (s *Server) callsData(r *http.Request, p auth.Principal) (any, error) {
	q, err := cdrQuery(r)
	if err != nil {
		return nil, err
	}
	if q.Limit == 0 {
		q.Limit = 50 // a phone screen's worth of scrolling
	}
	page, err := s.callRecords().Query(q)
	if err != nil {
		return nil, err
	}
	rows := make([]callRow, 0, len(page.Records))
	for _, rec := range page.Records {
		rows = append(rows, callRow{Record: rec, Duration: rec.Duration.Round(time.Second).String()})
	}
	rt, err := s.callRecords().Retention()
	if err != nil {
		return nil, err
	}
	v := r.URL.Query()
	v.Del("cursor")
	v.Del("format")
	filter := v.Encode()
	links := func(format string) string {
		e := url.Values{}
		for k, vals := range v {
			if k != "limit" {
				e[k] = vals
			}
		}
		e.Set("format", format)
		return "/api/v1/cdr/export?" + e.Encode()
	}
	next := ""
	if page.Next != "" {
		n := url.Values{}
		for k, vals := range v {
			n[k] = vals
		}
		n.Set("cursor", page.Next)
		next = "/calls?" + n.Encode()
	}
	first := ""
	if q.Cursor != "" {
		first = "/calls?" + filter
	}
	return map[string]any{
		"Rows": rows, "Query": q, "Next": next, "First": first,
		"Since": dateOf(q.Since), "Until": dateOf(q.Until.Add(-time.Nanosecond)),
		"Results":    []cdr.Result{cdr.Answered, cdr.Busy, cdr.NoAnswer, cdr.Rejected, cdr.Failed, cdr.Cancelled},
		"Directions": []string{"internal", "outbound", "inbound", "emergency"},
		"ExportCSV":  links(cdr.FormatCSV), "ExportJSONL": links(cdr.FormatJSONLines),
		"Trunks": s.trunkStates(), "Retention": rt.Days,
		"Live": s.liveCalls(), "HasLive": s.live != nil,
		"Queues": s.queueStats(),
	}, nil
}

func dateOf(t time.Time) string {
	if t.IsZero() || t.Year() < 1970 {
		return ""
	}
	return t.UTC().Format("2006-01-02")
}
