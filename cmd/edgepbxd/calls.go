package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/telephony"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// newCalls builds the B2BUA (media relay, dial plan, CDRs) and hands it to
// the SIP edge, which hangs every call up before its sockets close.
// pinholes is PID 1's firewall (nil in dev mode without it).
func (d *daemon) newCalls(pinholes media.Pinholes) error {
	if d.tel == nil {
		return errors.New("calls: no telephony configuration (see the log)")
	}
	addr, err := d.mediaAddr()
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	rtp := fwspec.DefaultRTP() // the range PID 1's firewall opens through pinholes
	ports, err := media.NewPorts(rtp.First, rtp.Last)
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	switch {
	case pinholes != nil:
	case d.cfg.devDir != "":
		// Dev mode without PID 1: there is no firewall to open; loopback
		// media needs no pinholes. Never used on the box.
		pinholes = devPinholes{}
	default:
		return errors.New("calls: no PID 1 control socket for media pinholes")
	}
	cert, _, err := media.NewDTLSCertificate()
	if err != nil {
		return fmt.Errorf("calls: DTLS certificate: %w", err)
	}
	relay, err := media.NewRelay(media.Config{Addr: addr, Ports: ports, Pinholes: selfPinholes{pinholes, addr}, Certificate: &cert, Log: d.log})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	plan := telephony.NewPlan(d.sip.Extensions(), d.tel, ifSet[dialplan.Gate](d.lic), d.secLog)
	if _, err := plan.Engine(); err != nil {
		// A stored plan that no longer builds (e.g. a DID whose extension
		// was deleted is left out, but other rules may have tightened):
		// the admin fixes it on the dial plan page; calls wait for that.
		d.log.Error("calls: dial plan", "err", err)
	}
	var apps call.Apps
	if vm, err := d.newVoicemail(); err != nil {
		d.log.Error("voicemail: disabled", "err", err)
	} else {
		apps, d.voicemail = vm, vm
		if err := vm.NotifyAll(); err != nil {
			d.log.Warn("voicemail: message counts", "err", err)
		}
	}
	feat, err := d.newFeatures(plan)
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	var router call.Router = feat
	if conf, music, err := d.newConference(); err != nil {
		d.log.Error("conference: disabled", "err", err)
	} else {
		d.conference, d.moh = conf, music
		apps = appMux{dialplan.AppVoicemail: apps, dialplan.AppVoicemailAccess: apps, dialplan.AppConference: conf}
		router = roomRouter{Engine: feat, plan: plan, rooms: conf}
	}
	// Queue callers nobody answers at once wait on the application
	// endpoint with music; a mailbox fallback opens voicemail there.
	mux, ok := apps.(appMux)
	if !ok {
		mux = appMux{dialplan.AppVoicemail: apps, dialplan.AppVoicemailAccess: apps}
	}
	mux[features.AppQueue] = feat.QueueApp(queueMedia{d.moh}, mux[dialplan.AppVoicemail])
	// Parked calls (transferred to the park code) wait there too.
	mux[call.AppParked] = feat.ParkApp(queueMedia{d.moh}, mux[dialplan.AppVoicemail])
	apps = mux
	var recorder call.Recorder
	if recs, err := d.newRecordings(feat); err != nil {
		d.log.Error("call recording: disabled", "err", err)
	} else {
		recorder, d.recs = recs, recs
	}
	// The IVR sits in front: its menus and time conditions are numbers
	// too; every other application (voicemail, rooms) is behind it.
	router, apps = d.newIVR(router, feat, apps)
	contact := d.sip.Contact("udp")
	b, err := call.New(call.Config{
		Client: d.sip.Sender(), Contact: contact, ContactTLS: d.sip.Contact("tls"),
		Relay: relay, Plan: router, Hunter: feat, Directory: telephony.NewDirectory(d.sip.Directory(nil), d.tel), CDR: cdr.New(d.db), Log: d.log,
		Events: d.secLog, Observer: d.dialogObserver(), Apps: apps, Recorder: recorder,
		Hold: holdMusic{music: queueMedia{d.moh}}, // holdmusic.go
	})
	if err != nil {
		return fmt.Errorf("calls: %w", err)
	}
	d.sip.SetCalls(b)
	d.calls, d.relay, d.features = b, relay, feat
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

func (devPinholes) OpenPinhole(context.Context, fwspec.Pinhole) error  { return nil }
func (devPinholes) ClosePinhole(context.Context, fwspec.Pinhole) error { return nil }
