package sipedge

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Probe is the answer to one OPTIONS the box sent to a SIP server (the
// admin's "test trunk").
type Probe struct {
	Status int           // final status code
	Reason string        // its reason phrase, bounded
	RTT    time.Duration // request to final answer
}

// maxProbeReason bounds the server's reason phrase (untrusted) before it
// reaches a page.
const maxProbeReason = 64

// ProbeOptions sends one OPTIONS for domain to addr over transport (udp,
// tcp or tls) from the box's listener, as trunk REGISTERs go, and waits
// for the final answer until ctx ends.
func (s *Server) ProbeOptions(ctx context.Context, domain string, addr netip.AddrPort, transport string) (Probe, error) {
	transport = strings.ToLower(transport)
	switch transport {
	case "udp", "tcp", "tls":
	default:
		return Probe{}, fmt.Errorf("options: transport %q: want udp, tcp or tls", transport)
	}
	if !addr.IsValid() {
		return Probe{}, fmt.Errorf("options: invalid address")
	}
	host := domain
	if host == "" {
		host = addr.Addr().String()
	}
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host})
	from := sip.Uri{Scheme: "sip", User: "edgepbx", Host: host}
	req.AppendHeader(&sip.FromHeader{Address: from, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(16)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host}})
	callID := sip.CallIDHeader(sip.GenerateTagN(24))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	req.SetDestination(addr.String())
	req.SetTransport(strings.ToUpper(transport))
	if err := s.onFlow(req); err != nil {
		return Probe{}, fmt.Errorf("options %s: %w", addr, err)
	}
	start := time.Now()
	res, err := answered(s.client.Do(ctx, req))
	if err != nil {
		return Probe{}, fmt.Errorf("options %s: %w", addr, err)
	}
	reason := res.Reason
	if len(reason) > maxProbeReason {
		reason = reason[:maxProbeReason]
	}
	// Printable text only: it is shown on a page and written to the log.
	reason = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(reason, "?"))
	return Probe{Status: res.StatusCode, Reason: reason, RTT: time.Since(start)}, nil
}
