package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/license"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

type pages struct{ t map[string]*template.Template }

var pageNames = []string{"claim", "login", "dashboard", "account", "users", "security", "audit", "certificates", "extensions", "telephony", "firewall", "system", "intrusion", "phones", "phonecard", "privacy", "conference", "voicemail", "notfound", "mailbox", "mailboxlogin"}

// templateFuncs are the functions every page's template may call.
func templateFuncs() template.FuncMap {
	return template.FuncMap{"can": func(p auth.Principal, perm string) bool { return p.Can(auth.Permission(perm)) }, "covers": Covers,
		"localtime": localTime, "diff": auditDiff}
}

func loadPages() (*pages, error) {
	funcs := templateFuncs()
	pg := &pages{t: map[string]*template.Template{}}
	for _, n := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+n+".html")
		if err != nil {
			return nil, fmt.Errorf("admin: template %s: %w", n, err)
		}
		pg.t[n] = t
	}
	return pg, nil
}

func staticHandler() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	fsrv := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fsrv.ServeHTTP(w, r)
	})
}

type pageData struct {
	Title string
	Page  string
	P     auth.Principal
	CSRF  string
	Data  any
	Roles []auth.Role
	// KeyLog is set while the TLS key log runs: every page says so.
	KeyLog string
	// Licence is the phone-home banner: for every user when degraded, for
	// admins on warnings.
	Licence string
	// Loc is the box's time zone for dates (localtime); UTC signed out.
	Loc *time.Location
}

// page renders a server-side page; data loads what it shows.
func (s *Server) page(name string, data func(*http.Request, auth.Principal) (any, error)) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		d := pageData{Title: name, Page: name, P: p, CSRF: p.CSRF, Roles: auth.Roles}
		if p.Username != "" {
			d.KeyLog = s.keyLogBanner()
			d.Licence = s.licenceBanner(p)
			d.Loc = s.zone(r.Context())
		}
		if data != nil {
			v, err := data(r, p)
			if err != nil {
				return err
			}
			d.Data = v
		}
		var buf bytes.Buffer
		if err := s.pages.t[name].Execute(&buf, d); err != nil {
			return fmt.Errorf("render %s: %w", name, err)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, err := buf.WriteTo(w)
		return err
	}
}

// notFound answers a page the box does not have with a styled page (the
// API keeps answering problem+json). It names no account: the path may be
// a guess by someone not logged in.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	path := r.URL.Path
	if len(path) > 200 {
		path = path[:200] + "…"
	}
	if err := s.pages.t["notfound"].Execute(&buf, pageData{Title: "not found", Page: "notfound", Data: path}); err != nil {
		s.log.Error("render not found", "err", err)
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = buf.WriteTo(w)
}

func (s *Server) dashData(r *http.Request, p auth.Principal) (any, error) {
	recent, err := s.audit.Query(audit.Filter{Limit: 10})
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	return map[string]any{"Items": s.dashboard(r.Context()), "Recent": recent, "Checklist": s.checklist(now),
		"Charts": s.charts(now, s.zone(r.Context()))}, nil
}

func (s *Server) accountData(r *http.Request, p auth.Principal) (any, error) {
	info, err := s.auth.Account(p.Username)
	if err != nil {
		return nil, err
	}
	sess, err := s.auth.Sessions(p.Username)
	if err != nil {
		return nil, err
	}
	toks, err := s.auth.Tokens(p.Username)
	if err != nil {
		return nil, err
	}
	hist, err := s.auth.History(p.Username, 20)
	if err != nil {
		return nil, err
	}
	return map[string]any{"Info": info, "Sessions": sess, "Tokens": toks, "History": hist, "Scopes": auth.Scopes}, nil
}

func (s *Server) usersData(r *http.Request, p auth.Principal) (any, error) {
	accts, err := s.auth.Accounts()
	if err != nil {
		return nil, err
	}
	sess, err := s.auth.Sessions("")
	if err != nil {
		return nil, err
	}
	hist, err := s.auth.History("", 50)
	if err != nil {
		return nil, err
	}
	myTOTP := false
	for _, a := range accts {
		if a.Username == p.Username {
			myTOTP = a.TOTP
		}
	}
	return map[string]any{"Accounts": accts, "Sessions": sess, "History": hist, "MyTOTP": myTOTP}, nil
}

func (s *Server) securityData(r *http.Request, p auth.Principal) (any, error) {
	pol, err := s.auth.Policy()
	if err != nil {
		return nil, err
	}
	o, err := s.origins()
	if err != nil {
		return nil, err
	}
	totp := map[auth.Role]bool{}
	for _, r := range pol.TOTPRoles {
		totp[r] = true
	}
	sd, err := s.sipData()
	if err != nil {
		return nil, err
	}
	return map[string]any{"Policy": pol, "Origins": o, "TOTPRoles": totp, "SIP": sd, "GeoIP": s.geoipView()}, nil
}

func (s *Server) auditData(r *http.Request, p auth.Principal) (any, error) {
	f, err := auditFilter(r)
	if err != nil {
		return nil, err
	}
	l, err := s.audit.Query(f)
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(l)-1; i < j; i, j = i+1, j-1 {
		l[i], l[j] = l[j], l[i]
	}
	q := r.URL.Query()
	q.Del("limit")
	q.Set("format", audit.FormatCSV)
	csvURL := "/api/v1/audit/export?" + q.Encode()
	q.Set("format", audit.FormatJSONLines)
	return map[string]any{"Entries": l, "Filter": f, "Outcomes": []string{audit.OK, audit.Denied, audit.Failed, audit.Warning}, "ExportCSV": csvURL, "ExportJSONL": "/api/v1/audit/export?" + q.Encode()}, nil
}

// licenceBanner is the licence state's banner for p, or "".
func (s *Server) licenceBanner(p auth.Principal) string {
	if s.lic == nil {
		return ""
	}
	st := s.lic.State()
	switch {
	case st.Banner == "":
		return ""
	case st.Mode == license.ModeDegraded:
		return st.Banner
	case st.Mode == license.ModeWarning && p.Role == auth.RoleAdmin:
		return st.Banner
	}
	return ""
}
