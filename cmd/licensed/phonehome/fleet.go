package phonehome

import (
	"context"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
)

// Box is the fleet view's summary of one box (licence, install id and
// hardware), rewritten by each of its check-ins.
type Box struct {
	Licence     string    `json:"licence"`
	InstallID   string    `json:"install"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"hw"`
	Firmware    string    `json:"fw"`
	LastCheckin time.Time `json:"last_checkin"`
	OfflineDays int       `json:"offline_days"` // as the box reported it
	Status      string    `json:"status"`       // licence status (listed: as of now)
	Clone       bool      `json:"clone"`        // (listed: as the licence says now)
	AuditFlag   bool      `json:"audit_flag"`
	Rollback    bool      `json:"rollback_flag"`
	Advisories  []string  `json:"advisories,omitempty"` // in force for its firmware
}

// FleetRow is a Box as listed, with the days since its last check-in by
// the server's clock.
type FleetRow struct {
	Box
	DaysSince int `json:"days_since_checkin"`
}

// recordBox keeps the box's summary (known licences only, bounded per
// licence like the anchors).
func (s *Server) recordBox(tx Tx, req *license.Request, now time.Time, resp *license.Response) error {
	key := req.InstallID + " " + req.Fingerprint
	raw, err := tx.Get(tBoxes, req.LicenceID, key)
	if err != nil {
		return err
	}
	if raw == nil {
		n, err := tx.Count(tBoxes, req.LicenceID)
		if err != nil || n >= maxAnchorBoxes {
			return err
		}
	}
	b := Box{Licence: req.LicenceID, InstallID: req.InstallID, Serial: req.Serial, Fingerprint: req.Fingerprint,
		Firmware: req.Firmware, LastCheckin: now, OfflineDays: req.OfflineDays, Status: resp.Status,
		Clone: resp.Clone, AuditFlag: resp.AuditRollback, Rollback: resp.StateRollback}
	for _, a := range resp.Advisories {
		b.Advisories = append(b.Advisories, a.ID)
	}
	return putJSON(tx, tBoxes, req.LicenceID, key, b)
}

// FleetQuery selects boxes. The zero value lists the first page of all.
type FleetQuery struct {
	Search     string // substring of licence, serial, install id or firmware
	Status     string // licence status, "" any
	Flag       string // "", "any", "none", "clone", "audit", "rollback"
	MinOffline int    // days since the last check-in, at least
	Limit      int    // rows per page (default 100, at most maxFleetPage)
	Offset     int
	CSV        bool
}

const (
	maxFleetPage   = 1000
	maxFleetSearch = 64
	maxFleetOffset = 10_000_000
)

// FieldError names the query parameter a fleet query refused.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string { return fmt.Sprintf("licensed: %s: %s", e.Field, e.Reason) }

// ParseFleetQuery reads a fleet query from URL parameters; unknown or
// repeated parameters and out-of-range values are refused by name.
func ParseFleetQuery(v url.Values) (FleetQuery, error) {
	q := FleetQuery{Limit: 100}
	for k, vals := range v {
		if k == "" {
			return q, &FieldError{"(empty name)", "a parameter without a name"}
		}
		if len(vals) != 1 {
			return q, &FieldError{k, "given more than once"}
		}
		val := vals[0]
		num := func(lo, hi int) (int, error) {
			n, err := strconv.Atoi(val)
			if err != nil || n < lo || n > hi {
				return 0, &FieldError{k, fmt.Sprintf("want a number from %d to %d", lo, hi)}
			}
			return n, nil
		}
		var err error
		switch k {
		case "q":
			if len(val) > maxFleetSearch {
				return q, &FieldError{k, fmt.Sprintf("longer than %d bytes", maxFleetSearch)}
			}
			q.Search = val
		case "status":
			if !slices.Contains([]string{"", license.StatusOK, license.StatusExpired, license.StatusRevoked, license.StatusUnknown}, val) {
				return q, &FieldError{k, "want ok, expired, revoked or unknown"}
			}
			q.Status = val
		case "flag":
			if !slices.Contains([]string{"", "any", "none", "clone", "audit", "rollback"}, val) {
				return q, &FieldError{k, "want any, none, clone, audit or rollback"}
			}
			q.Flag = val
		case "min_offline":
			q.MinOffline, err = num(0, 3650)
		case "limit":
			q.Limit, err = num(1, maxFleetPage)
		case "offset":
			q.Offset, err = num(0, maxFleetOffset)
		case "format":
			if val != "json" && val != "csv" {
				return q, &FieldError{k, "want json or csv"}
			}
			q.CSV = val == "csv"
		default:
			return q, &FieldError{k, "unknown parameter"}
		}
		if err != nil {
			return q, err
		}
	}
	return q, nil
}

func (q FleetQuery) match(r FleetRow) bool {
	if q.Search != "" {
		s := strings.ToLower(q.Search)
		if !slices.ContainsFunc([]string{r.Licence, r.Serial, r.InstallID, r.Firmware}, func(f string) bool {
			return strings.Contains(strings.ToLower(f), s)
		}) {
			return false
		}
	}
	if q.Status != "" && r.Status != q.Status {
		return false
	}
	flagged := r.Clone || r.AuditFlag || r.Rollback
	switch q.Flag {
	case "any":
		return flagged && r.DaysSince >= q.MinOffline
	case "none":
		return !flagged && r.DaysSince >= q.MinOffline
	case "clone":
		return r.Clone && r.DaysSince >= q.MinOffline
	case "audit":
		return r.AuditFlag && r.DaysSince >= q.MinOffline
	case "rollback":
		return r.Rollback && r.DaysSince >= q.MinOffline
	}
	return r.DaysSince >= q.MinOffline
}

// Fleet lists the boxes q selects, by licence and box, and how many match
// in all.
func (s *Server) Fleet(ctx context.Context, q FleetQuery) ([]FleetRow, int, error) {
	now := s.now()
	rows := []FleetRow{}
	total := 0
	limit := q.Limit
	if limit <= 0 || limit > maxFleetPage {
		limit = maxFleetPage
	}
	err := s.store.View(ctx, func(tx Tx) error {
		// The licences as they are now: a quiet box's licence may have
		// expired, been revoked or unflagged since it last checked in.
		lics := map[string]Licence{}
		err := tx.Scan(tLicences, func(_, id string, v []byte) error {
			var l Licence
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("decode licence %s: %w", id, err)
			}
			lics[id] = l
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Scan(tBoxes, func(_, _ string, v []byte) error {
			var r FleetRow
			if err := json.Unmarshal(v, &r.Box); err != nil {
				return fmt.Errorf("decode box: %w", err)
			}
			if l, ok := lics[r.Licence]; ok {
				r.Status, r.Clone = licenceStatus(l, now), l.Clone
			} else {
				r.Status = license.StatusUnknown
			}
			r.DaysSince = max(0, int(now.Sub(r.LastCheckin)/(24*time.Hour)))
			if !q.match(r) {
				return nil
			}
			total++
			if total > q.Offset && len(rows) < limit {
				rows = append(rows, r)
			}
			return nil
		})
	})
	return rows, total, err
}

func (s *Server) fleet(w http.ResponseWriter, r *http.Request) {
	q, err := ParseFleetQuery(r.URL.Query())
	var fe *FieldError
	if errors.As(err, &fe) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": "bad fleet query",
			"status": http.StatusBadRequest, "detail": fe.Reason, "field": fe.Field})
		return
	}
	rows, total, err := s.Fleet(r.Context(), q)
	if err != nil {
		s.log.Error("fleet view", "err", err)
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	if !q.CSV {
		reply(w, map[string]any{"total": total, "boxes": rows}, nil)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="fleet.csv"`)
	cw := csv.NewWriter(w)
	cw.Write([]string{"licence", "install", "serial", "hw", "firmware", "last_checkin", "days_since_checkin",
		"offline_days_reported", "status", "clone", "audit_flag", "rollback_flag", "advisories"})
	for _, b := range rows {
		cw.Write([]string{cell(b.Licence), cell(b.InstallID), cell(b.Serial), cell(b.Fingerprint), cell(b.Firmware),
			b.LastCheckin.UTC().Format(time.RFC3339), strconv.Itoa(b.DaysSince), strconv.Itoa(b.OfflineDays), cell(b.Status),
			strconv.FormatBool(b.Clone), strconv.FormatBool(b.AuditFlag), strconv.FormatBool(b.Rollback), cell(strings.Join(b.Advisories, " "))})
	}
	cw.Flush()
}

// cell keeps a box-supplied value from running as a spreadsheet formula.
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

//go:embed fleet.html
var fleetPage []byte

//go:embed fleet.js
var fleetJS []byte

// fleetAsset serves the fleet page's static files: no data in them (the
// script fetches /admin/fleet with the token the operator enters), and a
// CSP that allows nothing but this origin.
func fleetAsset(body []byte, ctype string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", ctype)
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		w.Write(body)
	}
}
