package admin

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// TrunkTester tests a trunk of the configuration in force; the
// TrunkStatus in Deps implements it where the SIP edge runs (edgepbxd
// adapts telephony.Trunks.Test).
type TrunkTester interface {
	TestTrunk(ctx context.Context, name string) (TrunkTestResult, error)
}

// Outcomes of a trunk test step (firmware/telephony's Test* values).
const (
	testOK          = "ok"
	testDNSNotFound = "dns-not-found"
	testDNSTimeout  = "dns-timeout"
	testNoAnswer    = "no-answer"
	testRefused     = "refused"
	testTLS         = "tls"
)

// trunkTestTimeout bounds each network step of a trunk test.
const trunkTestTimeout = 5 * time.Second

// maxTrunkTests bounds the trunk tests under way at once.
const maxTrunkTests = 2

// maxTestWords bounds a trunk test's answer in the audit log (the
// registrar's last error comes from the network).
const maxTestWords = 1024

// TrunkTestResult is what a trunk test found, before it is put in words.
type TrunkTestResult struct {
	Name      string
	Host      string // host:port as configured
	Transport string
	Auth      string
	Peers     []netip.Prefix
	Addrs     []netip.Addr
	DNS       string // outcome of the lookup
	Target    netip.AddrPort
	Options   string // outcome of the OPTIONS ("ok": any final answer)
	Status    int
	Reason    string
	RTT       time.Duration
	State     TrunkState
}

// TrunkTestAnswer is the answer of POST /api/v1/telephony/trunks/{name}/test.
type TrunkTestAnswer struct {
	OK bool `json:"ok"`
	// Status is the whole answer in words (the page shows it as is).
	Status string     `json:"status"`
	Steps  []TestStep `json:"steps"`
	// FirewallHint says which of the trunk's addresses the firewall
	// policy does not let reach SIP on the trunk's transport.
	FirewallHint string `json:"firewall_hint,omitempty"`
}

// TestStep is one step of a trunk test.
type TestStep struct {
	Step   string `json:"step"` // dns, options, registration
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func (s *Server) apiTrunkTest(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	tt, ok := s.trunks.(TrunkTester)
	if s.tel == nil || !ok {
		return errUnavailable
	}
	name := r.PathValue("name")
	if _, ok := s.tel.Current().Trunk(name); !ok {
		return fmt.Errorf("%w: no trunk %.64q", errNotFound, name)
	}
	if s.trunkTests.Add(1) > maxTrunkTests {
		s.trunkTests.Add(-1)
		return fmt.Errorf("%w: %d trunk tests already under way", auth.ErrBusy, maxTrunkTests)
	}
	defer s.trunkTests.Add(-1)
	ctx, cancel := context.WithTimeout(r.Context(), 3*trunkTestTimeout)
	defer cancel()
	res, err := tt.TestTrunk(ctx, name)
	if err != nil {
		return fmt.Errorf("test trunk %.64q: %w", name, err)
	}
	a := trunkTestWords(res)
	a.FirewallHint = s.trunkFirewallHint(ctx, res.Transport, res.Addrs, res.Peers)
	if a.FirewallHint != "" {
		a.Status += " " + a.FirewallHint
	}
	detail := a.Status
	if len(detail) > maxTestWords {
		detail = strings.ToValidUTF8(detail[:maxTestWords], "")
	}
	ev := audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.trunk.test", Target: name, Detail: detail}
	if !a.OK {
		ev.Outcome = audit.Failed
	}
	_ = s.audit.Record(ev)
	writeJSON(w, http.StatusOK, a)
	return nil
}

// trunkTestWords puts a trunk test's outcome in an installer's words:
// what was tried, what came back, and what to check next.
func trunkTestWords(r TrunkTestResult) TrunkTestAnswer {
	var a TrunkTestAnswer
	host, _ := splitHost(r.Host)
	tr := strings.ToUpper(r.Transport)
	add := func(step string, ok bool, format string, args ...any) {
		a.Steps = append(a.Steps, TestStep{Step: step, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	addrs := make([]string, len(r.Addrs))
	for i, x := range r.Addrs {
		addrs[i] = x.String()
	}
	switch {
	case r.DNS == testOK && len(addrs) == 1 && addrs[0] == host:
		add("dns", true, "Address %s.", host)
	case r.DNS == testOK:
		add("dns", true, "%s resolves to %s.", host, strings.Join(addrs, ", "))
	case r.DNS == testDNSNotFound:
		add("dns", false, "The name %s does not exist in DNS: check it for typos against the provider's documentation.", host)
	case r.DNS == testDNSTimeout:
		add("dns", false, "No DNS answer for %s in time: check the box's DNS servers and its Internet access.", host)
	default:
		add("dns", false, "The name %s could not be looked up: check the box's DNS servers.", host)
	}
	if r.DNS == testOK {
		switch r.Options {
		case testOK:
			ms := r.RTT.Milliseconds()
			if r.Status >= 200 && r.Status < 300 {
				add("options", true, "The provider answered at %s over %s in %d ms (%d %s).", r.Target, tr, ms, r.Status, r.Reason)
			} else {
				add("options", true, "The provider answered at %s over %s in %d ms with %d %s: it is reachable (many providers refuse OPTIONS from a box they do not know yet; calls can still work).",
					r.Target, tr, ms, r.Status, r.Reason)
			}
		case testRefused:
			add("options", false, "%s refused the %s connection: nothing listens on that port. Check the port and the transport.", r.Target, tr)
		case testNoAnswer:
			add("options", false, "No answer from %s over %s within %d s: the address or port may be wrong, the provider may ignore OPTIONS, or a firewall on the way drops it.",
				r.Target, tr, int(trunkTestTimeout.Seconds()))
		case testTLS:
			add("options", false, "The TLS handshake with %s failed: the provider's certificate is not trusted, or that port does not speak TLS.", r.Target)
		default:
			add("options", false, "The OPTIONS request to %s over %s could not be sent.", r.Target, tr)
		}
	}
	switch {
	case r.Auth != pbxconfig.TrunkAuthRegister:
		if len(r.Peers) > 0 {
			add("registration", true, "No registration: the provider is recognised by its addresses (%s).", prefixes(r.Peers))
		} else {
			add("registration", false, "No registration and no provider addresses: calls from this provider cannot be recognised.")
		}
	case r.State.State == "registered":
		add("registration", true, "Registered at %s until %s UTC.", r.State.Registrar, r.State.Expires.UTC().Format("2006-01-02 15:04"))
	case r.State.State == "failed":
		add("registration", false, "Registration fails: %s.", r.State.LastError)
	default:
		add("registration", true, "Registration under way.")
	}
	a.OK = true
	words := make([]string, len(a.Steps))
	for i, st := range a.Steps {
		a.OK = a.OK && st.OK
		words[i] = st.Detail
	}
	a.Status = strings.Join(words, " ")
	return a
}

func prefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// splitHost is host:port's host (the whole string without a port).
func splitHost(hp string) (host, port string) {
	if ap, err := netip.ParseAddrPort(hp); err == nil {
		return ap.Addr().String(), fmt.Sprint(ap.Port())
	}
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.Contains(hp[:i], ":") {
		return hp[:i], hp[i+1:]
	}
	return strings.Trim(hp, "[]"), ""
}

// trunkFirewallHint says which of a trunk's addresses the confirmed
// firewall policy does not let reach SIP on transport; "" when all may,
// or when the policy cannot be read (the page says so elsewhere).
func (s *Server) trunkFirewallHint(ctx context.Context, transport string, addrs []netip.Addr, peers []netip.Prefix) string {
	if s.fw == nil || len(addrs)+len(peers) == 0 {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	st, err := s.fw.GetPolicy(ctx)
	if err != nil {
		return ""
	}
	return firewallHint(st.Confirmed, transport, addrs, peers)
}

// firewallHint is trunkFirewallHint on a given policy.
func firewallHint(pol fwspec.Access, transport string, addrs []netip.Addr, peers []netip.Prefix) string {
	svc := "sip-" + strings.ToLower(transport)
	var zones []string
	for _, r := range pol.Rules {
		if r.Service == svc {
			zones = append(zones, r.Zones...)
		}
	}
	if slices.Contains(zones, fwspec.ZoneAny) {
		return ""
	}
	var open []netip.Prefix
	for _, z := range pol.Zones {
		if slices.Contains(zones, z.Name) {
			open = append(open, z.Prefixes...)
		}
	}
	covered := func(p netip.Prefix) bool {
		for _, o := range open {
			if o.Addr().Is4() == p.Addr().Is4() && o.Bits() <= p.Bits() && o.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	var out []string
	for _, a := range addrs {
		if !covered(netip.PrefixFrom(a, a.BitLen())) {
			out = append(out, a.String())
		}
	}
	for _, p := range peers {
		if !covered(p.Masked()) && !slices.Contains(out, p.String()) {
			out = append(out, p.String())
		}
	}
	if len(out) == 0 {
		return ""
	}
	tr := strings.ToUpper(transport)
	if len(zones) == 0 {
		return fmt.Sprintf("The firewall keeps SIP over %s closed to everyone (service %s is open to no zone): the provider at %s cannot reach the box. Open %s to a zone holding the provider's addresses on the Firewall page.",
			tr, svc, strings.Join(out, ", "), svc)
	}
	return fmt.Sprintf("The firewall does not let %s reach SIP over %s (service %s is open to zones %s only): calls from the provider would be dropped. Add its addresses to one of those zones on the Firewall page.",
		strings.Join(out, ", "), tr, svc, strings.Join(zones, ", "))
}

// trunkInline is the Dial plan page's trunk status and firewall hints by
// trunk name. The hints there come without DNS (the page must not wait on
// a lookup): from the provider's addresses and a host given as an address.
func (s *Server) trunkInline(ctx context.Context, trunks []pbxconfig.TelephonyTrunk) (map[string]TrunkState, map[string]string) {
	states := map[string]TrunkState{}
	for _, st := range s.trunkStates() {
		states[st.Name] = st
	}
	hints := map[string]string{}
	if s.fw == nil || len(trunks) == 0 {
		return states, hints
	}
	ctx, cancel := context.WithTimeout(ctx, pid1Timeout)
	defer cancel()
	pol, err := s.fw.GetPolicy(ctx)
	if err != nil {
		return states, hints
	}
	for _, t := range trunks {
		var addrs []netip.Addr
		if h, _ := splitHost(t.Host); h != "" {
			if a, err := netip.ParseAddr(h); err == nil {
				addrs = append(addrs, a.Unmap())
			}
		}
		if h := firewallHint(pol.Confirmed, t.Transport, addrs, t.Peers); h != "" {
			hints[t.Name] = h
		}
	}
	return states, hints
}

func (s *Server) canTestTrunks() bool {
	_, ok := s.trunks.(TrunkTester)
	return ok
}

// TrunkTemplate is a provider's usual trunk settings, as data the Dial
// plan editor offers when a trunk is added (trunktemplates.json).
type TrunkTemplate struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Country   string `json:"country,omitempty"`
	Host      string `json:"host,omitempty"`
	Port      int    `json:"port"`
	Transport string `json:"transport"`
	Auth      string `json:"auth"`
	Domain    string `json:"domain,omitempty"`
	SRTP      string `json:"srtp,omitempty"`
	// Note says what the installer still has to enter.
	Note string `json:"note"`
}

//go:embed trunktemplates.json
var trunkTemplatesJSON string
