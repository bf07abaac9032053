package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// TestUnicastPnP: real sipp, in a phones namespace, sends the ua-profile
// SUBSCRIBE a Yealink sends by unicast to the box's SIP port (edgepbxd
// with --pnp in the box namespace). A known phone (approved or pending)
// inside the zone gets 200 and a NOTIFY whose body is the bootstrap URL,
// over UDP and over TCP; an unknown MAC, a revoked phone, a known MAC from
// an address outside the zone and a source over its rate all get the same
// silence; the unknown MAC is listed as asking.
func TestUnicastPnP(t *testing.T) {
	sipp := siptest.NeedSipp(t)
	netnstest.Require(t, "nsenter")
	box, phone := netnstest.New(t), netnstest.New(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ph0"}, PeerName: "ph1", PeerNamespace: netlink.NsFd(int(phone))}); err != nil {
		t.Fatal(err)
	}
	// 198.51.100.0/24 shares the wire but is outside the SIP zones.
	netnstest.LinkUp(t, bh, "ph0", "10.20.0.1/24", "198.51.100.1/24")
	ph, err := netlink.NewHandleAt(phone)
	if err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, ph, "lo")
	netnstest.LinkUp(t, ph, "ph1", "10.20.0.2/24", "198.51.100.2/24")
	ph.Close()

	dir := t.TempDir()
	var d *daemon
	if err := netnstest.Run(box, func() error {
		var err error
		d, err = newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "10.20.0.1:5060", sipTLSAddr: "10.20.0.1:5061",
			provHTTPSAddr: "10.20.0.1:0", provHTTPAddr: "10.20.0.1:0", pnp: true}, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- d.serveSIP(ctx) }()
	defer func() { cancel(); <-served }()
	_, bootURL := d.prov.ProvisioningURLs()
	if bootURL == "" {
		t.Fatal("no bootstrap URL")
	}

	add := func(mac string, approve bool) {
		t.Helper()
		if _, err := d.prov.Add(provision.AddRequest{MAC: mac, Vendor: provision.Yealink, Approve: approve}, "test", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	add("805ec0000001", true)  // approved
	add("805ec0000002", false) // pending
	add("805ec0000003", true)
	if _, err := d.prov.Revoke("805ec0000003", "test", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}

	// probe runs the scenario calls times from src and returns the URLs
	// answered and the number of silences.
	probe := func(mac, src, transport string, calls int) (urls []string, silent int) {
		t.Helper()
		sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", "ua_profile.xml"))
		wd := t.TempDir()
		args := []string{"-sf", sc, "-i", src, "-p", "5060", "-t", transport, "-key", "mac", mac,
			"-m", fmt.Sprint(calls), "-r", "100", "-l", fmt.Sprint(calls), "-timeout", "60s", "-timeout_error",
			"-nostdin", "-trace_logs", "-trace_err", "10.20.0.1:5060"}
		cctx, ccancel := context.WithTimeout(ctx, 90*time.Second)
		defer ccancel()
		cmd := inNetNS(cctx, phone, sipp, args...)
		cmd.Dir = wd
		out, err := cmd.CombinedOutput()
		logs, _ := filepath.Glob(filepath.Join(wd, "*_logs.log"))
		var text []byte
		if len(logs) == 1 {
			text, _ = os.ReadFile(logs[0])
		}
		if err != nil {
			t.Fatalf("sipp %s from %s over %s: %v\n%s\nlog:\n%s", mac, src, transport, err, tail(string(out), 3000), text)
		}
		for _, ln := range strings.Split(string(text), "\n") {
			switch {
			case strings.HasPrefix(ln, "ANSWERED "):
				urls = append(urls, strings.TrimPrefix(ln, "ANSWERED "))
			case ln == "SILENT":
				silent++
			}
		}
		if len(urls)+silent != calls {
			t.Fatalf("sipp %s from %s: %d answered + %d silent of %d calls\nlog:\n%s", mac, src, len(urls), silent, calls, text)
		}
		return urls, silent
	}
	answered := func(what, mac, src, transport string) {
		t.Helper()
		urls, _ := probe(mac, src, transport, 1)
		if len(urls) != 1 || urls[0] != bootURL {
			t.Fatalf("%s: NOTIFY bodies %q, want the bootstrap URL %q (pnp %+v)", what, urls, bootURL, d.prov.PnPStats())
		}
	}
	silence := func(what, mac, src string) {
		t.Helper()
		if urls, _ := probe(mac, src, "u1", 1); len(urls) != 0 {
			t.Fatalf("%s: answered %q, want silence", what, urls)
		}
	}

	// A source gets a burst of 5 (then 1/s): the cases below stay within it.
	answered("approved phone over UDP", "805ec0000001", "10.20.0.2", "u1")
	answered("pending phone over UDP", "805ec0000002", "10.20.0.2", "u1")
	answered("approved phone over TCP", "805ec0000001", "10.20.0.2", "t1")
	silence("unknown MAC", "805ec0000009", "10.20.0.2")
	silence("revoked phone", "805ec0000003", "10.20.0.2")
	silence("known MAC from outside the zone", "805ec0000001", "198.51.100.2")
	st := d.prov.PnPStats()
	if !st.Unicast || st.Answered != 3 || st.Unknown != 2 {
		t.Fatalf("pnp counters %+v: want unicast on, 3 answered, 2 unknown or revoked", st)
	}
	asking := false
	for _, a := range d.prov.Asking() {
		asking = asking || a.MAC == "805ec0000009"
	}
	if !asking {
		t.Errorf("the unknown MAC is not listed as asking: %+v", d.prov.Asking())
	}

	// Over the per-source rate: 8 SUBSCRIBEs at 100/s from one address
	// get at most the burst answered; the rest is silence like any refusal.
	before := d.prov.PnPStats().Limited
	urls, silent := probe("805ec0000001", "10.20.0.2", "u1", 8)
	limited := d.prov.PnPStats().Limited - before
	t.Logf("rate: %d answered, %d silent, %d limited", len(urls), silent, limited)
	if silent == 0 || len(urls) > 5 || limited != uint64(silent) {
		t.Fatalf("over the rate: %d answered, %d silent, %d counted limited", len(urls), silent, limited)
	}
}

// inNetNS runs a command inside ns through nsenter (no test thread
// switches namespace).
func inNetNS(ctx context.Context, ns netns.NsHandle, name string, args ...string) *exec.Cmd {
	fd, _ := unix.Dup(int(ns))
	nsf := os.NewFile(uintptr(fd), "netns")
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/self/fd/3", name}, args...)...)
	cmd.ExtraFiles = []*os.File{nsf}
	return cmd
}
