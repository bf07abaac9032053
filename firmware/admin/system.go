package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Extensions is the SIP edge's credential store (sipedge.Server.Extensions()).
type Extensions interface {
	// SetWith and DeleteWith run also (the audit entry) in the same
	// transaction as the change.
	SetWith(user, password string, also func(*store.Tx) error) error
	DeleteWith(user string, also func(*store.Tx) error) error
	List() []string
}

// Firewall is PID 1's live firewall state, over the control socket.
type Firewall interface {
	ListBans(ctx context.Context) ([]fwspec.Ban, error)
	Unban(ctx context.Context, p netip.Prefix) error
	Counters(ctx context.Context) (fwspec.Counters, error)
	// The admin-editable zones and rules (see policy.go).
	GetPolicy(ctx context.Context) (fwspec.PolicyState, error)
	SetPolicy(ctx context.Context, a fwspec.Access, adminSource netip.Addr) (fwspec.Pending, error)
	ConfirmPolicy(ctx context.Context, id string) error
}

// System is PID 1's power control, over the control socket.
type System interface {
	Reboot(ctx context.Context) error
	Poweroff(ctx context.Context) error
}

// StatusItem is one line of the dashboard that edgepbxd fills in (health,
// registrations, licence, ...). OK false shows it as a problem.
type StatusItem struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	OK    bool   `json:"ok"`
	// Level refines OK for the page: "ok" (green), "warn" (amber),
	// "bad" (red); empty: from OK.
	Level string `json:"level,omitempty"`
	// Reason says in one line why it is not ok; Link is the page that
	// fixes it.
	Reason string `json:"reason,omitempty"`
	Link   string `json:"link,omitempty"`
}

// Status levels.
const (
	LevelOK   = "ok"
	LevelWarn = "warn"
	LevelBad  = "bad"
)

// Class is the item's CSS class: its level, else from OK.
func (i StatusItem) Class() string {
	if i.Level != "" {
		return i.Level
	}
	if i.OK {
		return LevelOK
	}
	return LevelBad
}

// pid1Timeout bounds each control-socket request made for a page.
const pid1Timeout = 5 * time.Second

var (
	errConflict = errors.New("conflict")
	errNotFound = errors.New("not found")
)

// sipPasswordAlphabet leaves out look-alike characters (0/O, 1/l/I) so
// the password can be typed into a phone's keypad menu from the screen.
const sipPasswordAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// sipPasswordLen: 20 characters of 57 give about 116 bits.
const sipPasswordLen = 20

// newSIPPassword draws a password uniformly from sipPasswordAlphabet.
func newSIPPassword() string {
	return randomFrom(sipPasswordAlphabet, sipPasswordLen)
}

func randomFrom(alphabet string, n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, 64)
	limit := byte(256 - 256%len(alphabet)) // reject bytes that would bias the draw
	for len(out) < n {
		rand.Read(buf)
		for _, b := range buf {
			if b < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

func (s *Server) extensionsData(r *http.Request, p auth.Principal) (any, error) {
	if s.exts == nil {
		return map[string]any{"Unavailable": true}, nil
	}
	regs := map[string][]Registration{}
	for _, r := range s.registrations() {
		regs[r.User] = append(regs[r.User], r)
	}
	return map[string]any{"List": s.exts.List(), "Throttled": throttledByUser(s.sipBlocks()), "Regs": regs}, nil
}

func (s *Server) apiExtensions(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.exts == nil {
		return errUnavailable
	}
	writeJSON(w, http.StatusOK, map[string]any{"extensions": s.exts.List()})
	return nil
}

// ExtensionRequest is the body of POST /api/v1/extensions.
type ExtensionRequest struct {
	User string `json:"user"`
}

// setExtension gives user a new generated password and returns it: the
// only time it is shown (the SIP edge keeps only digests).
func (s *Server) setExtension(r *http.Request, p auth.Principal, user string, create bool) (string, error) {
	if s.exts == nil {
		return "", errUnavailable
	}
	// The SIP edge's rule, checked here first so a bad name is a 400
	// and not a store error.
	if !pbxconfig.ValidSIPUser(user) {
		return "", withField("/user", fmt.Errorf("%w: extension must be 1-64 of A-Z a-z 0-9 . _ + -", errBadRequest))
	}
	exists := slices.Contains(s.exts.List(), user)
	if create && exists {
		return "", withField("/user", fmt.Errorf("%w: extension %s exists", errConflict, user))
	}
	if create && s.lic != nil && !s.lic.AllowNewExtension() {
		return "", fmt.Errorf("%w: licence degraded: no new extensions until the box checks in with its licence server", errConflict)
	}
	if !create && !exists {
		return "", fmt.Errorf("%w: extension %s", errNotFound, user)
	}
	pw := newSIPPassword()
	action := "telephony.extension.password"
	if create {
		action = "telephony.extension.create"
	}
	// The secret and its audit entry commit in one transaction.
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: action, Target: user, Detail: "password generated (not recorded)"}
	if err := s.exts.SetWith(user, pw, func(tx *store.Tx) error { return s.audit.RecordTx(tx, ev) }); err != nil {
		return "", err
	}
	return pw, nil
}

func (s *Server) apiCreateExtension(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	var req ExtensionRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	pw, err := s.setExtension(r, p, req.User, true)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]string{"status": "created", "user": req.User, "password": pw})
	return nil
}

func (s *Server) apiExtensionPassword(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	user := r.PathValue("name")
	pw, err := s.setExtension(r, p, user, false)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "new password", "user": user, "password": pw})
	return nil
}

func (s *Server) apiDeleteExtension(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.exts == nil {
		return errUnavailable
	}
	user := r.PathValue("name")
	if !slices.Contains(s.exts.List(), user) {
		return fmt.Errorf("%w: extension %.64s", errNotFound, user)
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.extension.delete", Target: user}
	// Its forwards go with it: a new extension with the number must not
	// inherit them.
	if err := s.exts.DeleteWith(user, func(tx *store.Tx) error {
		if err := features.ForgetTx(tx, user); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, ev)
	}); err != nil {
		return err
	}
	if s.features != nil {
		s.features.Forgot(user)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

type firewallView struct {
	Bans     []fwspec.Ban    `json:"bans"`
	Counters fwspec.Counters `json:"counters"`
}

func (s *Server) firewall(ctx context.Context) (firewallView, error) {
	if s.fw == nil {
		return firewallView{}, errUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	bans, err := s.fw.ListBans(ctx)
	if err != nil {
		return firewallView{}, fmt.Errorf("list bans via PID 1: %w", err)
	}
	n, err := s.fw.Counters(ctx)
	if err != nil {
		return firewallView{}, fmt.Errorf("firewall counters via PID 1: %w", err)
	}
	if bans == nil {
		bans = []fwspec.Ban{}
	}
	return firewallView{Bans: bans, Counters: n}, nil
}

func (s *Server) firewallData(r *http.Request, p auth.Principal) (any, error) {
	v, err := s.firewall(r.Context())
	if errors.Is(err, errUnavailable) {
		return map[string]any{"Unavailable": true, "SIP": s.sipBlocks()}, nil
	}
	if err != nil {
		return nil, err
	}
	sip := s.sipBlocks()
	pol, err := s.policyState(r.Context())
	if err != nil {
		// Bans and counters still show; the policy part says why it cannot.
		return map[string]any{"V": v, "SIP": sip, "PolicyError": err.Error(), "BanRegs": s.bannedPhones(v.Bans)}, nil
	}
	return map[string]any{"V": v, "SIP": sip, "Policy": pol, "Editor": newPolicyEditor(pol.PolicyState), "BanRegs": s.bannedPhones(v.Bans)}, nil
}

// bannedPhones are, per banned prefix, the extensions registered from
// inside it: the phones the ban cuts off.
func (s *Server) bannedPhones(bans []fwspec.Ban) map[string][]string {
	out := map[string][]string{}
	regs := s.registrations()
	for _, b := range bans {
		for _, r := range regs {
			ap, err := netip.ParseAddrPort(r.Source)
			if err == nil && b.Prefix.Contains(ap.Addr().Unmap()) && !slices.Contains(out[b.Prefix.String()], r.User) {
				out[b.Prefix.String()] = append(out[b.Prefix.String()], r.User)
			}
		}
	}
	return out
}

func (s *Server) apiFirewall(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	v, err := s.firewall(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// UnbanRequest is the body of POST /api/v1/firewall/unban.
type UnbanRequest struct {
	Prefix string `json:"prefix"`
}

func (s *Server) apiUnban(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.fw == nil {
		return errUnavailable
	}
	var req UnbanRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	pfx, err := netip.ParsePrefix(req.Prefix)
	if err != nil {
		a, aerr := netip.ParseAddr(req.Prefix)
		if aerr != nil {
			return fmt.Errorf("%w: prefix must be an address or CIDR prefix", errBadRequest)
		}
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
	defer cancel()
	if err := s.fw.Unban(ctx, pfx.Masked()); err != nil {
		return fmt.Errorf("unban via PID 1: %w", err)
	}
	// The SIP edge drops a banned source itself too, before the firewall
	// has the ban: lifted here as well, or the lift would not be one.
	if s.sipblk != nil {
		s.sipblk.Lift(pfx.Masked(), "")
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "firewall.unban", Target: pfx.Masked().String()})
	writeJSON(w, http.StatusOK, map[string]string{"status": "unbanned"})
	return nil
}

func (s *Server) systemData(r *http.Request, p auth.Principal) (any, error) {
	m := map[string]any{"Available": s.sys != nil, "NetworkAvailable": s.netw != nil}
	if err := s.backupData(m, p); err != nil {
		return nil, err
	}
	s.firmwareData(r.Context(), m)
	if s.netw == nil {
		return m, nil
	}
	if v, err := s.networkState(r.Context()); err != nil {
		m["NetworkError"] = err.Error()
	} else {
		m["Network"], m["NetEditor"] = v, newNetEditor(v.State)
	}
	if v, err := s.timeState(r.Context()); err != nil {
		m["TimeError"] = err.Error()
	} else {
		loc, err := netspec.LoadZone(v.Config.TimeZone)
		if err != nil {
			loc = time.UTC
		}
		now := s.clock.Now()
		m["Time"], m["NTP"] = v, strings.Join(v.Config.NTP, " ")
		m["Now"] = boxTime{Local: now.In(loc).Format("2006-01-02 15:04:05 MST"), UTC: now.UTC().Format("2006-01-02 15:04:05 UTC"), ISO: now.UTC().Format(time.RFC3339)}
		if !v.Synced.IsZero() {
			m["Synced"] = boxTime{Local: v.Synced.In(loc).Format("2006-01-02 15:04:05 MST"), UTC: v.Synced.UTC().Format("2006-01-02 15:04:05 UTC"), ISO: v.Synced.UTC().Format(time.RFC3339)}
		}
	}
	return m, nil
}

// boxTime is a time shown in the box's zone with UTC on hover.
type boxTime struct{ Local, UTC, ISO string }

// netEditor is the System page's network form: the pending change if
// there is one, else the confirmed network, as editable text per NIC.
type netEditor struct {
	Hostname string
	NICs     []nicEditor
	VLANs    string // one per line: "ID PARENT dhcp|static [ADDR/PFX ...]"
	DNS      string
	Live     string // the box's addresses now, space-separated (no prefix)
}

type nicEditor struct {
	Name, Mode, Addresses, Gateway4, Gateway6 string
}

func newNetEditor(st netspec.State) netEditor {
	n := st.Confirmed
	if st.Pending != nil {
		n = st.Pending.Network
	}
	ed := netEditor{Hostname: n.Hostname}
	live := make([]string, 0, len(st.Live))
	for _, p := range st.Live {
		live = append(live, p.Addr().String())
	}
	ed.Live = strings.Join(live, " ")
	byName := map[string]netspec.Interface{}
	for _, it := range n.Interfaces {
		byName[it.Name] = it
	}
	str := func(a netip.Addr) string {
		if a.IsValid() {
			return a.String()
		}
		return ""
	}
	for _, name := range st.NICs {
		it := byName[name]
		var as []string
		for _, p := range it.Addresses {
			as = append(as, p.String())
		}
		ed.NICs = append(ed.NICs, nicEditor{Name: name, Mode: it.Mode, Addresses: strings.Join(as, " "), Gateway4: str(it.Gateway4), Gateway6: str(it.Gateway6)})
	}
	var vl []string
	for _, v := range n.VLANs {
		line := fmt.Sprintf("%d %s %s", v.ID, v.Parent, v.Mode)
		for _, p := range v.Addresses {
			line += " " + p.String()
		}
		vl = append(vl, line)
	}
	ed.VLANs = strings.Join(vl, "\n")
	var dns []string
	for _, a := range n.DNS {
		dns = append(dns, a.String())
	}
	ed.DNS = strings.Join(dns, " ")
	return ed
}

// power asks PID 1 to reboot or power off, after recording who asked: the
// audit entry must be on disk before the box goes down.
func (s *Server) power(action string, f func(context.Context) error) func(http.ResponseWriter, *http.Request, auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
		if s.sys == nil {
			return errUnavailable
		}
		if err := s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "system." + action}); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), pid1Timeout)
		defer cancel()
		if err := f(ctx); err != nil {
			return fmt.Errorf("%s via PID 1: %w", action, err)
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": action + " requested"})
		return nil
	}
}

func (s *Server) apiReboot(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sys == nil {
		return errUnavailable
	}
	return s.power("reboot", s.sys.Reboot)(w, r, p)
}

func (s *Server) apiPoweroff(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.sys == nil {
		return errUnavailable
	}
	return s.power("poweroff", s.sys.Poweroff)(w, r, p)
}

// dashboard collects what the dashboard and /api/v1/status show.
func (s *Server) dashboard(ctx context.Context) []StatusItem {
	var items []StatusItem
	if s.status != nil {
		items = append(items, s.status(ctx)...)
	}
	if s.certs != nil {
		cur := s.certs.Current()
		days := int(cur.NotAfter.Sub(s.clock.Now()).Hours() / 24)
		it := StatusItem{Name: "Certificate", OK: days >= 14, Link: "/certificates",
			Value: fmt.Sprintf("%s, expires %s (%d days)", cur.Source, cur.NotAfter.UTC().Format("2006-01-02"), days)}
		switch {
		case days < 7:
			it.Level, it.Reason = LevelBad, "Browsers and phones refuse an expired certificate: renew or replace it now."
		case days < 30:
			it.Level, it.Reason = LevelWarn, "It expires within a month: renew or replace it."
		}
		items = append(items, it)
	}
	if on := s.keyLogBanner(); on != "" {
		items = append(items, StatusItem{Name: "TLS key log", Value: "ON until " + on, OK: false})
	}
	if s.fw != nil {
		v, err := s.firewall(ctx)
		if err != nil {
			items = append(items, StatusItem{Name: "Firewall bans", Value: "unavailable: " + err.Error()})
		} else {
			it := StatusItem{Name: "Firewall bans", Value: fmt.Sprint(len(v.Bans)), OK: len(v.Bans) == 0, Link: "/firewall"}
			if len(v.Bans) > 0 {
				it.Level = LevelWarn
				it.Reason = fmt.Sprintf("%d source(s) are banned: check that none is yours.", len(v.Bans))
			}
			items = append(items, it)
		}
	}
	if it, ok := s.sipBlockStatus(); ok {
		items = append(items, it)
	}
	res, verr := s.audit.Verify()
	items = append(items, StatusItem{Name: "Audit log", Value: fmt.Sprintf("%d entries, chain %s", res.Entries, map[bool]string{true: "verified", false: "BROKEN"}[verr == nil]), OK: verr == nil, Link: "/audit"})
	if verr != nil {
		items[len(items)-1].Reason = "An entry was changed or removed: export the log and investigate."
	}
	items = append(items, s.adminChecks(ctx)...)
	// Problems first, so the first lines say what to do.
	rank := map[string]int{LevelBad: 0, LevelWarn: 1, LevelOK: 2}
	sort.SliceStable(items, func(i, j int) bool { return rank[items[i].Class()] < rank[items[j].Class()] })
	return items
}

// backupData adds the Backups section's data to the System page's.
func (s *Server) backupData(out map[string]any, p auth.Principal) error {
	if s.backups == nil {
		return nil
	}
	files, err := s.backups.List()
	if err != nil {
		return err
	}
	st, err := s.backups.Settings()
	if err != nil {
		return err
	}
	views, err := s.backups.Targets()
	if err != nil {
		return err
	}
	targets := map[string]backup.TargetView{}
	for _, v := range views {
		targets[v.Kind] = v
	}
	out["Backups"] = map[string]any{"Files": files, "Settings": st, "Targets": targets}
	if info, err := s.auth.Account(p.Username); err == nil {
		out["MyTOTP"] = info.TOTP
	}
	return nil
}
