package telephony

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

// Outcomes of a trunk test's steps, for the admin side to put in words.
const (
	TestOK          = "ok"
	TestDNSNotFound = "dns-not-found" // the name does not exist
	TestDNSTimeout  = "dns-timeout"   // no DNS answer in time
	TestDNSFailed   = "dns-failed"    // any other lookup failure
	TestNoAnswer    = "no-answer"     // nothing came back before the deadline
	TestRefused     = "refused"       // TCP/TLS connection refused
	TestTLS         = "tls"           // TLS handshake or certificate failed
	TestFailed      = "failed"        // anything else
)

// maxTestAddrs bounds how many resolved addresses a test reports.
const maxTestAddrs = 8

// TrunkTest is what "test trunk" found: the name resolved, one OPTIONS
// to the first address answered (or not), and the registration state.
type TrunkTest struct {
	Name      string
	Host      string // host:port as configured
	Transport string
	Auth      string
	Peers     []netip.Prefix

	Addrs   []netip.Addr // what the host name resolved to
	DNS     string       // TestOK or a TestDNS* outcome
	DNSErr  string       // the resolver's message, for the log
	Target  netip.AddrPort
	Options string // TestOK (any final answer) or why not
	Probe   sipedge.Probe
	Err     string // the transaction's error, for the log
	State   TrunkState
}

// ErrNoTrunk is a test of a trunk that is not in the configuration.
var ErrNoTrunk = errors.New("no such trunk")

// Test tests the trunk name of the configuration in force: resolve its
// host, send one OPTIONS from the box's SIP listener, and report its
// registration state. Each step is bounded by timeout.
func (m *Trunks) Test(ctx context.Context, name string, timeout time.Duration) (TrunkTest, error) {
	tr, ok := m.tel.Current().Trunk(name)
	if !ok {
		return TrunkTest{}, fmt.Errorf("trunk %q: %w", name, ErrNoTrunk)
	}
	t := TrunkTest{Name: tr.Name, Host: tr.Host, Transport: tr.Transport, Auth: tr.Auth, Peers: tr.Peers}
	for _, st := range m.States() {
		if st.Name == tr.Name {
			t.State = st
		}
	}
	host, portS, err := net.SplitHostPort(tr.Host)
	if err != nil {
		host, portS = tr.Host, ""
	}
	port := 5060
	if tr.Transport == "tls" {
		port = 5061
	}
	if n, err := strconv.Atoi(portS); err == nil && n > 0 && n < 65536 {
		port = n
	}
	if a, err := netip.ParseAddr(host); err == nil {
		t.Addrs, t.DNS = []netip.Addr{a.Unmap()}, TestOK
	} else {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		addrs, err := m.resolver().LookupNetIP(lctx, "ip", host)
		cancel()
		if err != nil {
			t.DNS, t.DNSErr = dnsOutcome(err), err.Error()
			return t, nil
		}
		for _, a := range addrs[:min(len(addrs), maxTestAddrs)] {
			t.Addrs = append(t.Addrs, a.Unmap())
		}
		t.DNS = TestOK
	}
	if len(t.Addrs) == 0 {
		t.DNS = TestDNSNotFound
		return t, nil
	}
	t.Target = netip.AddrPortFrom(t.Addrs[0], uint16(port))
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	domain := tr.Domain
	if domain == "" {
		domain = host
	}
	p, err := m.edge.ProbeOptions(pctx, domain, t.Target, tr.Transport)
	if err != nil {
		t.Options, t.Err = probeOutcome(pctx, err), err.Error()
		return t, nil
	}
	t.Options, t.Probe = TestOK, p
	return t, nil
}

func (m *Trunks) resolver() *net.Resolver {
	if m.Resolver != nil {
		return m.Resolver
	}
	return net.DefaultResolver
}

func dnsOutcome(err error) string {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return TestDNSNotFound
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return TestDNSTimeout
	}
	return TestDNSFailed
}

func probeOutcome(ctx context.Context, err error) string {
	var re tls.RecordHeaderError
	var ce *tls.CertificateVerificationError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return TestRefused
	case errors.As(err, &ce), errors.As(err, &re):
		return TestTLS
	case ctx.Err() != nil, errors.Is(err, context.DeadlineExceeded), errors.Is(err, sipedge.ErrNoAnswer):
		return TestNoAnswer
	}
	return TestFailed
}
