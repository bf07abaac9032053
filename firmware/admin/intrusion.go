package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Intrusion is the intrusion report (*intrusion.Aggregator); nil: none.
type Intrusion interface {
	Report(from, to string) (intrusion.Report, error)
}

// ReportSettingsRequest is the body of PUT /api/v1/security/report/settings.
type ReportSettingsRequest = intrusion.Settings

// rangeProblem answers a refused from/to naming the query parameter.
func rangeProblem(w http.ResponseWriter, err error) bool {
	var re *intrusion.RangeError
	if !errors.As(err, &re) {
		return false
	}
	telephonyProblem(w, http.StatusBadRequest, "bad request", err.Error(), re.Field)
	return true
}

func (s *Server) apiReport(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.intrusion == nil {
		return fmt.Errorf("%w: no intrusion report in this build", errUnavailable)
	}
	q := r.URL.Query()
	for _, f := range []string{"from", "to"} {
		if len(q[f]) > 1 {
			telephonyProblem(w, http.StatusBadRequest, "bad request", f+": given more than once", f)
			return nil
		}
	}
	rep, err := s.intrusion.Report(q.Get("from"), q.Get("to"))
	if rangeProblem(w, err) {
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func (s *Server) apiReportSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	set, err := intrusion.LoadSettings(s.db)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, set)
	return nil
}

func (s *Server) apiSetReportSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req ReportSettingsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "security.report.update", After: req}
	err := s.db.Update(func(tx *store.Tx) error {
		prev, err := intrusion.SaveSettingsTx(tx, req)
		if err != nil {
			return err
		}
		ev.Before = prev
		return s.audit.RecordTx(tx, ev)
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, req)
	return nil
}

// chartBar is one day's bar of the report page's inline SVG chart.
type chartBar struct {
	X, Y, W, H int
	Date       string
	Attacks    uint64
	Bans       uint64
}

// Chart geometry (SVG user units).
const (
	chartW, chartH = 600, 160
)

// reportChart draws attack events (SIP auth failures, scanner drops,
// floods, admin login failures) per day as bars scaled to the busiest day.
func reportChart(days []intrusion.Figures) []chartBar {
	var peak uint64 = 1
	attacks := make([]uint64, len(days))
	for i, d := range days {
		attacks[i] = d.AuthFailures + d.Scanners + d.Floods + d.AdminFailures
		peak = max(peak, attacks[i])
	}
	out := make([]chartBar, 0, len(days))
	if len(days) == 0 {
		return out
	}
	slot := chartW / len(days)
	for i, d := range days {
		h := int(attacks[i] * uint64(chartH-20) / peak)
		if attacks[i] > 0 && h == 0 {
			h = 1
		}
		out = append(out, chartBar{X: i*slot + 1, Y: chartH - h, W: max(slot-2, 1), H: h, Date: d.Date,
			Attacks: attacks[i], Bans: d.Bans + d.Throttles})
	}
	return out
}

func (s *Server) reportPageData(r *http.Request, p auth.Principal) (any, error) {
	m := map[string]any{"From": r.URL.Query().Get("from"), "To": r.URL.Query().Get("to"), "Available": s.intrusion != nil}
	set, err := intrusion.LoadSettings(s.db)
	if err != nil {
		return nil, err
	}
	m["Settings"] = set
	if sv, err := s.syslogView(); err == nil {
		m["SyslogOn"] = sv.Settings.Enabled
	}
	if s.intrusion == nil {
		return m, nil
	}
	rep, err := s.intrusion.Report(r.URL.Query().Get("from"), r.URL.Query().Get("to"))
	var re *intrusion.RangeError
	if errors.As(err, &re) {
		m["RangeError"], m["RangeField"] = err.Error(), re.Field
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	m["Report"], m["Chart"], m["ChartW"], m["ChartH"] = rep, reportChart(rep.Days), chartW, chartH
	m["From"], m["To"] = rep.From, rep.To
	return m, nil
}
