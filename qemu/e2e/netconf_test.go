package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgepbx/edgepbx/qemu"
)

// netRevert is the network confirmation window of the test image
// (edgepbx.test.netrevert, honoured only by -tags testhook builds; a
// production image always waits 120 s).
const netRevert = 15 * time.Second

// bootTap boots img on a fresh tap0 in ns, with the LAN and a DHCP server
// (10.99.0.15 for the guest) on the host side, and waits for ready.
func bootTap(t *testing.T, ns *netnsThread, disk string) *qemu.VM {
	t.Helper()
	vm, err := qemu.Boot(context.Background(), buildImage(t, "qemu-x86_64"),
		qemu.WithDataDisk(disk),
		qemu.WithTap(ns.path, "tap0"),
		qemu.WithAppend("edgepbx.test.netrevert="+netRevert.String()),
		qemu.WithConsoleLog(&consoleLog{tb: t}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	var setupErr error
	ns.do(func() {
		l, err := netlink.LinkByName("tap0")
		if err == nil {
			err = netlink.AddrReplace(l, &netlink.Addr{IPNet: &net.IPNet{IP: tapHostIP, Mask: tapMask}})
		}
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			setupErr = fmt.Errorf("configure tap0: %w", err)
			return
		}
		setupErr = dhcpServer(t, "tap0")
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("appliance halted: %s", line)
	}
	return vm
}

// inNS makes an admin client dial from the test's namespace: each new
// connection's socket is created on the namespace's thread.
func (a *boxAdmin) inNS(ns *netnsThread) *boxAdmin {
	tr := a.c.Transport.(*http.Transport)
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		ns.do(func() {
			d := net.Dialer{Timeout: 5 * time.Second}
			c, err = d.DialContext(ctx, network, addr)
		})
		return c, err
	}
	return a
}

// reachable waits until HTTPS answers at addr (from the namespace).
func reachable(t *testing.T, ns *netnsThread, addr string, within time.Duration) error {
	t.Helper()
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		ns.do(func() {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "443"), 2*time.Second); err == nil {
				c.Close()
			}
		})
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("HTTPS at %s: %w", addr, err)
}

// at is a copy of a bound to another address of the box, with the same
// session (cookies) and CSRF token, on new connections only.
func (a *boxAdmin) at(t *testing.T, ns *netnsThread, addr, fp string) *boxAdmin {
	b := newBoxAdmin(t, "https://"+addr, fp)
	b.csrf = a.csrf
	old, _ := url.Parse(a.base)
	nu, _ := url.Parse(b.base)
	b.c.Jar.SetCookies(nu, a.c.Jar.Cookies(old))
	return b.inNS(ns)
}

type netState struct {
	Confirmed struct {
		Hostname   string `json:"hostname"`
		Interfaces []struct {
			Name      string   `json:"name"`
			Mode      string   `json:"mode"`
			Addresses []string `json:"addresses"`
		} `json:"interfaces"`
	} `json:"confirmed"`
	Pending *struct {
		ID string `json:"id"`
	} `json:"pending"`
	Live []string `json:"live"`
}

func (a *boxAdmin) network(t *testing.T) netState {
	t.Helper()
	var st netState
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/system/network", nil), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// setStatic asks for a static address. The answer must arrive on the old
// address: PID 1 applies the change only after it has answered.
func (a *boxAdmin) setStatic(t *testing.T, addr string, vlan bool) {
	t.Helper()
	body := map[string]any{"hostname": "pbx-static", "interfaces": []map[string]any{{
		"name": "eth0", "mode": "static", "addresses": []string{addr + "/24"}, "gateway4": tapHostIP.String()}},
		"dns": []string{tapHostIP.String()}}
	if vlan {
		// The phones' VLAN (the board loads 8021q).
		body["vlans"] = []map[string]any{{"id": 20, "parent": "eth0", "mode": "static", "addresses": []string{"10.20.0.1/24"}}}
	}
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest("PUT", a.base+"/api/v1/system/network", strings.NewReader(string(raw)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", a.base)
	req.Header.Set("X-CSRF-Token", a.csrf)
	c := *a.c
	c.Timeout = 5 * time.Second
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("PUT network to %s: no answer on the old address: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PUT network = %d", resp.StatusCode)
	}
}

// TestX86NetworkChangeRevertAndCommit drives the real PID 1 through the
// admin API over a tap in a test namespace: a static address that nobody
// confirms is reverted (the box answers on its DHCP address again), and
// one confirmed over a new connection to the new address commits and
// survives a reboot, with a phone VLAN (eth0.20) brought up in the guest.
func TestX86NetworkChangeRevertAndCommit(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	ns := newNetnsThread(t)
	disk := filepath.Join(t.TempDir(), "data.img")
	vm := bootTap(t, ns, disk)
	start := time.Now()
	b := banner(t, vm)
	dhcpAddr := tapGuestIP.String()
	if err := reachable(t, ns, dhcpAddr, stepTimeout); err != nil {
		t.Fatal(err)
	}
	api := newBoxAdmin(t, "https://"+dhcpAddr, b["tls sha256"]).inNS(ns)
	api.claim(b["setup code"])

	t.Run("unconfirmed change reverts", func(t *testing.T) {
		api.setStatic(t, "10.99.0.30", false)
		if err := reachable(t, ns, "10.99.0.30", 30*time.Second); err != nil {
			t.Fatalf("pending address not applied: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), netRevert+stepTimeout)
		defer cancel()
		line, err := vm.WaitLine(ctx, "edgepbx: network change ")
		if err != nil || !strings.HasSuffix(strings.TrimSpace(line), "not confirmed: reverted") {
			t.Fatalf("no revert on the console: %q, %v", line, err)
		}
		// Back on DHCP: the old address answers again, the change is gone.
		if err := reachable(t, ns, dhcpAddr, stepTimeout); err != nil {
			t.Fatalf("box not reachable on its old address after the revert: %v", err)
		}
		api.c.CloseIdleConnections()
		st := api.network(t)
		if st.Pending != nil || st.Confirmed.Interfaces[0].Mode != "dhcp" {
			t.Fatalf("after revert: %+v", st)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("confirmed change commits and persists", func(t *testing.T) {
		api.setStatic(t, "10.99.0.20", true)
		if err := reachable(t, ns, "10.99.0.20", 30*time.Second); err != nil {
			t.Fatal(err)
		}
		na := api.at(t, ns, "10.99.0.20", b["tls sha256"])
		st := na.network(t)
		if st.Pending == nil {
			t.Fatalf("no pending change: %+v", st)
		}
		na.do(http.StatusOK, "POST", "/api/v1/system/network/confirm", map[string]string{"id": st.Pending.ID})
		t.Logf("figure: change confirmed %.1fs after claim", time.Since(start).Seconds())
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := vm.Powerdown(ctx); err != nil {
			t.Fatalf("powerdown: %v", err)
		}
		vm2 := bootTap(t, ns, disk)
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
			defer cancel()
			vm2.Powerdown(ctx)
		}()
		if err := reachable(t, ns, "10.99.0.20", stepTimeout); err != nil {
			t.Fatalf("after reboot: %v", err)
		}
		st = api.at(t, ns, "10.99.0.20", b["tls sha256"]).network(t)
		if st.Pending != nil || st.Confirmed.Hostname != "pbx-static" || st.Confirmed.Interfaces[0].Mode != "static" ||
			strings.Join(st.Live, ",") != "10.99.0.20/24,10.20.0.1/24,127.0.0.1/8" {
			t.Fatalf("after reboot: %+v", st)
		}
	})
}
