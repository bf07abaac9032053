package admin

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/provision"
)

// Live is the running SIP edge and B2BUA as the pages show them: who is
// registered from where, the calls in progress, and what a phone needs to
// connect (edgepbxd adapts *sipedge.Server and *call.B2BUA).
type Live interface {
	// Registrations are the live bindings of every extension.
	Registrations() []Registration
	// Calls are the calls in progress, oldest first; nil without calls.
	Calls() []LiveCall
	// Hangup ends a call in progress; false: no such call.
	Hangup(id string) bool
	// Endpoint is the SIP service in force: bound ports and realm.
	Endpoint() SIPEndpoint
}

// Registration is one registered contact of an extension.
type Registration struct {
	User      string    `json:"user"`
	Contact   string    `json:"contact"`
	Source    string    `json:"source"` // ip:port the REGISTER came from
	Transport string    `json:"transport"`
	UserAgent string    `json:"user_agent"`
	Expires   time.Time `json:"expires"`
}

// LiveCall is one call in progress.
type LiveCall struct {
	ID         string    `json:"id"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Direction  string    `json:"direction"`
	Trunk      string    `json:"trunk,omitempty"`
	Start      time.Time `json:"start"`
	Answer     time.Time `json:"answer,omitzero"` // zero while ringing
	Codec      string    `json:"codec,omitempty"`
	SRTPCaller bool      `json:"srtp_caller"`
	SRTPCallee bool      `json:"srtp_callee"`
	MOS        float64   `json:"mos,omitempty"` // 0: no RTCP report yet
}

// SIPEndpoint is the SIP service a phone connects to: the ports actually
// bound (0: transport off) and the digest realm.
type SIPEndpoint struct {
	UDP   int    `json:"udp"`
	TCP   int    `json:"tcp"`
	TLS   int    `json:"tls"`
	Realm string `json:"realm"`
}

// PhoneConnect is the answer of GET /api/v1/extensions/{name}/connect:
// everything a phone needs, except the password (shown once, at creation
// or reset, in that answer only).
type PhoneConnect struct {
	User   string `json:"user"`
	AuthID string `json:"auth_id"`
	Realm  string `json:"realm"`
	// Domain is the SIP domain to enter as the server; Names and
	// Addresses are every name and address the box answers to.
	Domain    string   `json:"domain"`
	Names     []string `json:"names"`
	Addresses []string `json:"addresses"`
	Ports     []Port   `json:"ports"`
	// TLSFingerprint is the SHA-256 fingerprint of the certificate the box
	// presents on SIP over TLS and HTTPS (self-signed unless replaced).
	TLSFingerprint string `json:"tls_fingerprint"`
	// QR is what the QR code carries: the phone's one-time provisioning
	// link when a provisioned phone has this extension, its window is
	// open and the caller may change telephony (QRKind "provisioning"),
	// else a sip: URI without password (QRKind "sip").
	QR     string `json:"qr"`
	QRKind string `json:"qr_kind"`
	// Registered are the extension's live registrations now.
	Registered []Registration `json:"registered"`
}

// Port is one SIP transport and its port.
type Port struct {
	Transport string `json:"transport"`
	Port      int    `json:"port"`
}

// connectFor builds the connect-a-phone data of an existing extension for
// p. The one-time provisioning link hands out the extension's password:
// only principals who may change telephony (as for the phone's enrolment
// card) get it; others get the sip: URI.
func (s *Server) connectFor(user string, p auth.Principal) (PhoneConnect, error) {
	if s.exts == nil || s.live == nil {
		return PhoneConnect{}, errUnavailable
	}
	if !pbxconfig.ValidSIPUser(user) || !slices.Contains(s.exts.List(), user) {
		return PhoneConnect{}, fmt.Errorf("%w: extension %.64q", errNotFound, user)
	}
	ep := s.live.Endpoint()
	c := PhoneConnect{User: user, AuthID: user, Realm: ep.Realm, Names: []string{}, Addresses: []string{}, Registered: []Registration{}}
	for _, n := range s.names {
		if a, err := netip.ParseAddr(n); err == nil {
			c.Addresses = append(c.Addresses, a.String())
		} else {
			c.Names = append(c.Names, n)
		}
	}
	c.Domain = serverName(c.Names, c.Addresses)
	for _, p := range []Port{{"udp", ep.UDP}, {"tcp", ep.TCP}, {"tls", ep.TLS}} {
		if p.Port > 0 {
			c.Ports = append(c.Ports, p)
		}
	}
	if s.certs != nil {
		c.TLSFingerprint = s.certs.Fingerprint()
	}
	for _, r := range s.live.Registrations() {
		if r.User == user {
			c.Registered = append(c.Registered, r)
		}
	}
	if p.Can(auth.PermTelephonyWrite) {
		c.QR, c.QRKind = s.provisioningLink(user), "provisioning"
	}
	if c.QR == "" {
		c.QR, c.QRKind = sipURI(user, c.Domain, c.Ports), "sip"
	}
	return c, nil
}

// serverName is what a phone should enter as its server: a dotted name
// (ACME's or an installed certificate's, which DNS resolves), else the
// first IPv4 address (a bare host name such as the self-signed
// certificate's is rarely in the site's DNS), else whatever there is.
func serverName(names, addrs []string) string {
	for _, n := range names {
		if strings.Contains(n, ".") {
			return n
		}
	}
	for _, a := range addrs {
		if !strings.Contains(a, ":") {
			return a
		}
	}
	if len(addrs) > 0 {
		return addrs[0]
	}
	if len(names) > 0 {
		return names[0]
	}
	return ""
}

// provisioningLink is the one-time provisioning URL of a phone that has
// user among its extensions, while it can be used; "" otherwise.
func (s *Server) provisioningLink(user string) string {
	if s.phones == nil {
		return ""
	}
	devs, err := s.phones.List()
	if err != nil {
		return ""
	}
	for _, d := range devs {
		if !slices.Contains(d.Extensions, user) {
			continue
		}
		if e, err := s.phones.Enrolment(d.MAC); err == nil && e.URL != "" {
			return e.URL
		}
	}
	return ""
}

// sipURI is the account address a softphone can import: no password, the
// transport named when UDP is off.
func sipURI(user, domain string, ports []Port) string {
	if domain == "" {
		return "sip:" + user
	}
	host := domain
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u := "sip:" + user + "@" + host
	if len(ports) > 0 && ports[0].Transport != "udp" {
		u += fmt.Sprintf(":%d;transport=%s", ports[0].Port, ports[0].Transport)
	} else if len(ports) > 0 && ports[0].Port != 5060 {
		u += fmt.Sprintf(":%d", ports[0].Port)
	}
	return u
}

func (s *Server) apiExtensionConnect(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	c, err := s.connectFor(r.PathValue("name"), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

// apiExtensionQR is the connect card's QR code, made here as SVG (no
// script, nothing inline the CSP would refuse).
func (s *Server) apiExtensionQR(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	c, err := s.connectFor(r.PathValue("name"), p)
	if err != nil {
		return err
	}
	svg, err := provision.QRSVG(c.QR)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "no-store") // a provisioning link is one-time
	_, err = w.Write(svg)
	return err
}

func (s *Server) registrations() []Registration {
	if s.live == nil {
		return nil
	}
	return s.live.Registrations()
}

func (s *Server) apiRegistrations(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.live == nil {
		return errUnavailable
	}
	regs := s.live.Registrations()
	if regs == nil {
		regs = []Registration{}
	}
	exts := []string{}
	if s.exts != nil {
		exts = s.exts.List()
	}
	writeJSON(w, http.StatusOK, map[string]any{"extensions": exts, "registrations": regs})
	return nil
}

func (s *Server) liveCalls() []LiveCall {
	if s.live == nil {
		return nil
	}
	return s.live.Calls()
}

func (s *Server) apiLiveCalls(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.live == nil {
		return errUnavailable
	}
	calls := s.live.Calls()
	if calls == nil {
		calls = []LiveCall{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"calls": calls})
	return nil
}

func (s *Server) apiHangup(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if s.live == nil {
		return errUnavailable
	}
	id := r.PathValue("id")
	if len(id) > 64 {
		return fmt.Errorf("%w: call id: at most 64 characters", errBadRequest)
	}
	var who string
	for _, c := range s.live.Calls() {
		if c.ID == id {
			who = c.From + " → " + c.To
		}
	}
	if who == "" || !s.live.Hangup(id) {
		return fmt.Errorf("%w: no call %.64q in progress", errNotFound, id)
	}
	_ = s.audit.Record(audit.Event{Actor: p.Actor(), Source: src(r), Action: "telephony.call.hangup", Target: id, Detail: who})
	writeJSON(w, http.StatusOK, map[string]string{"status": "hung up"})
	return nil
}
