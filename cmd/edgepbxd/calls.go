package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	sipconfig "github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/sip"
	"github.com/edgepbx/edgepbx/netfw"
)

// newCalls builds the B2BUA (media relay, dial plan, CDRs) and hands it to
// the SIP edge, which hangs every call up before its sockets close. It runs
// after newSIP and newLicense.
func (d *daemon) newCalls() error {
	// The stored dial plan configuration comes first so the admin pages
	// can fix it even when the calls cannot start.
	tel, err := sipconfig.LoadTelephony(d.db)
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	// Trunk registrations follow the stored trunks from now on, also
	// when the calls below cannot start.
	d.trunks = newTrunkManager(tel, d.sip, d.log)
	d.admin.SetTelephony(telephonySaver{TelephonyStore: tel, saved: d.trunks.changed})
	d.admin.SetTrunkStatus(d.trunks)
	addr, err := d.mediaAddr()
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	rtp := netfw.DefaultPolicy().RTP // the range PID 1's firewall opens through pinholes
	ports, err := media.NewPorts(rtp.First, rtp.Last)
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	var holes media.Pinholes
	switch {
	case d.ctrl != nil:
		holes = d.ctrl
	case d.cfg.devDir != "":
		// Dev mode without PID 1: there is no firewall to open; loopback
		// media needs no pinholes. Never used on the box.
		holes = devPinholes{}
	default:
		return errors.New("calls: no PID 1 control socket for media pinholes")
	}
	cert, _, err := media.NewDTLSCertificate()
	if err != nil {
		return fmt.Errorf("calls: DTLS certificate: %w", err)
	}
	relay, err := media.NewRelay(media.Config{Addr: addr, Ports: ports, Pinholes: holes, Certificate: &cert, Log: d.log})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	var gate dialplan.Gate
	if d.lic != nil { // a nil *license.Manager in the interface would not be nil
		gate = d.lic
	}
	plan := &livePlan{exts: d.sip.Extensions(), tel: tel, gate: gate, events: d.secLog}
	if _, err := plan.engine(); err != nil {
		// A stored plan that no longer builds (e.g. a DID whose extension
		// was deleted is left out, but other rules may have tightened):
		// the admin fixes it on the dial plan page; calls wait for that.
		d.log.Error("calls: dial plan", "err", err)
	}
	contact := d.sip.Contact("udp")
	b, err := call.New(call.Config{
		Client: d.sip.Sender(), Contact: contact, ContactTLS: d.sip.Contact("tls"),
		Relay: relay, Plan: plan, Directory: trunkDirectory{Directory: d.sip.Directory(nil), tel: tel}, CDR: cdr.New(d.db), Log: d.log,
		Events: d.secLog,
	})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	d.sip.SetCalls(b)
	d.calls = b
	d.log.Info("calls: ready", "media", addr.String(), "rtp", fmt.Sprintf("%d-%d", rtp.First, rtp.Last), "contact", contact)
	return nil
}

// mediaAddr is the box's address media is anchored on: the SIP address
// when it is bound to one, else the box's first global IPv4 (then IPv6)
// address.
func (d *daemon) mediaAddr() (netip.Addr, error) {
	if a := d.sip.Addr("udp"); a != nil {
		if ua, ok := a.(*net.UDPAddr); ok {
			if ip, ok := netip.AddrFromSlice(ua.IP); ok && !ip.Unmap().IsUnspecified() {
				return ip.Unmap(), nil
			}
		}
	}
	var v6 netip.Addr
	for _, ip := range interfaceIPs() {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		if a = a.Unmap(); a.Is4() {
			return a, nil
		}
		if !v6.IsValid() {
			v6 = a
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, errors.New("no address to anchor media on")
}

// devPinholes is the dev-mode firewall: nothing to open on loopback.
type devPinholes struct{}

func (devPinholes) OpenPinhole(context.Context, netfw.Pinhole) error  { return nil }
func (devPinholes) ClosePinhole(context.Context, netfw.Pinhole) error { return nil }

// livePlan is the dial plan over the stored telephony configuration
// (config.TelephonyStore, edited on the admin dial plan page) and the SIP
// extensions that exist now (numeric names). The engine is rebuilt when
// either changes, so a saved change applies to the next call without a
// restart; the rebuilt engine keeps the live counters and suspensions of
// the extensions and trunks that still exist (dialplan.Engine.Rebuild).
type livePlan struct {
	exts   *sip.Extensions
	tel    *sipconfig.TelephonyStore
	gate   dialplan.Gate
	events dialplan.Events

	mu  sync.Mutex
	key string
	eng *dialplan.Engine
}

func (p *livePlan) engine() (*dialplan.Engine, error) {
	var nums []string
	for _, n := range p.exts.List() {
		if m, err := dialplan.Normalize(n); err == nil && m == n && !strings.HasPrefix(n, "+") {
			nums = append(nums, n)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	key := strconv.FormatInt(p.tel.Version(), 10) + "|" + strings.Join(nums, ",")
	if p.eng != nil && key == p.key {
		return p.eng, nil
	}
	plan := p.tel.Current().Plan(nums)
	var eng *dialplan.Engine
	var err error
	if p.eng != nil {
		eng, err = p.eng.Rebuild(plan)
	} else {
		eng, err = dialplan.New(plan, p.gate, p.events)
	}
	if err != nil {
		return nil, fmt.Errorf("dial plan: %w", err)
	}
	p.key, p.eng = key, eng
	return eng, nil
}

// trunkDirectory resolves trunks from the stored telephony configuration
// (its host:port and transport), so trunks added on the dial plan page
// carry calls at once; trunks only the SIP edge knows still resolve there.
type trunkDirectory struct {
	call.Directory
	tel *sipconfig.TelephonyStore
}

func (d trunkDirectory) Trunk(name string) (call.Target, bool) {
	tr, ok := d.tel.Current().Trunk(name)
	if !ok {
		return d.Directory.Trunk(name)
	}
	host, port, err := net.SplitHostPort(tr.Host)
	if err != nil {
		return call.Target{}, false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return call.Target{}, false
	}
	return call.Target{URI: sipmsg.Uri{Scheme: "sip", Host: host, Port: n}, Dest: tr.Host, Transport: tr.Transport}, true
}

// Policy is the SRTP policy of the leg: a stored trunk's own setting
// (dial plan page: optional, required, off); extensions and trunks only
// the SIP edge knows keep the edge's answer.
func (d trunkDirectory) Policy(id call.Identity) media.Policy {
	if id.Trunk != "" {
		if tr, ok := d.tel.Current().Trunk(id.Trunk); ok {
			switch tr.SRTP {
			case "required":
				return media.SRTPRequired
			case "off":
				return media.SRTPOff
			default:
				return media.SRTPOptional
			}
		}
	}
	return d.Directory.Policy(id)
}

// OutboundCallerID is what ext presents over trunk (call.CallerIDs): its
// own configured number, else the trunk's, else ("") its extension
// number; and whether the trunk is trusted with P-Asserted-Identity.
func (d trunkDirectory) OutboundCallerID(ext, trunk string) (string, bool) {
	cur := d.tel.Current()
	tr, ok := cur.Trunk(trunk)
	if n := cur.CallerIDs[ext]; n != "" {
		return n, ok && tr.AssertIdentity
	}
	if !ok {
		return "", false
	}
	return tr.CallerID, tr.AssertIdentity
}

// Credentials answer a trunk's INVITE challenge with the dial plan page's
// username and sealed password; else the SIP edge's trunk configuration.
func (d trunkDirectory) Credentials(name string) (string, string, bool) {
	if tr, ok := d.tel.Current().Trunk(name); ok && tr.Username != "" {
		if pw, err := d.tel.TrunkPassword(name); err == nil && len(pw) > 0 {
			return tr.Username, string(pw), true
		}
	}
	return d.Directory.Credentials(name)
}

func (p *livePlan) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	e, err := p.engine()
	if err != nil {
		return dialplan.Decision{}, nil, err
	}
	return e.RouteOutbound(from, dialled)
}

func (p *livePlan) RouteInbound(trunk, called string) (dialplan.Decision, *dialplan.Lease, error) {
	e, err := p.engine()
	if err != nil {
		return dialplan.Decision{}, nil, err
	}
	return e.RouteInbound(trunk, called)
}
