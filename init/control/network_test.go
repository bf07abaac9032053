package control

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/clock"
	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// memNet records what the real committer asks to apply.
type memNet struct {
	mu      sync.Mutex
	applies []netspec.Network
}

func (m *memNet) ApplyNetwork(_ context.Context, n netspec.Network, _ []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applies = append(m.applies, n)
	return nil
}

func (m *memNet) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.applies) }

func bootNet() netspec.Network {
	return netspec.Network{Hostname: "pbx", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeDHCP}}}
}

func startNetwork(t *testing.T, after time.Duration) (*fixture, *memNet, *netconf.Committer, *clock.Clock) {
	t.Helper()
	mn := &memNet{}
	cm := netconf.NewCommitter(context.Background(), netconf.CommitterConfig{Apply: mn, NICs: []string{"eth0", "eth1"},
		Default: bootNet(), RevertAfter: after, Log: slog.New(slog.DiscardHandler)})
	t.Cleanup(cm.Close)
	clk := clock.New(clock.Config{Log: slog.New(slog.DiscardHandler)})
	f := start(t, func(c *Config) { c.Network, c.Clock = cm, clk })
	return f, mn, cm, clk
}

func staticNet() netspec.Network {
	return netspec.Network{Hostname: "pbx-2", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeStatic,
		Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}, Gateway4: netip.MustParseAddr("192.0.2.1")}},
		VLANs: []netspec.VLAN{{ID: 20, Parent: "eth0", Mode: netspec.ModeDHCP}}}
}

func TestNetworkRoundTrip(t *testing.T) {
	f, mn, _, _ := startNetwork(t, time.Hour)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	st, err := c.GetNetwork(ctx)
	if err != nil || st.Pending != nil || st.Confirmed.Hostname != "pbx" || len(st.NICs) != 2 || st.RevertAfter != time.Hour {
		t.Fatalf("initial %+v, %v", st, err)
	}
	p, err := c.SetNetwork(ctx, staticNet())
	if err != nil {
		t.Fatal(err)
	}
	if !netspec.ValidPendingID(p.ID) || mn.count() != 1 {
		t.Fatalf("pending %+v, applies %d", p, mn.count())
	}
	if err := c.ConfirmNetwork(ctx, strings.Repeat("0", 32)); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong id: %v", err)
	}
	if err := c.ConfirmNetwork(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	st, err = c.GetNetwork(ctx)
	if err != nil || st.Pending != nil || st.Confirmed.Hostname != "pbx-2" || len(st.Confirmed.VLANs) != 1 {
		t.Fatalf("after confirm %+v, %v", st, err)
	}
}

func TestNetworkRevertsThroughSocket(t *testing.T) {
	f, mn, _, _ := startNetwork(t, 50*time.Millisecond)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	p, err := c.SetNetwork(ctx, staticNet())
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the revert (the committer re-applies the boot network).
	for mn.count() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	st, err := c.GetNetwork(ctx)
	if err != nil || st.Pending != nil || st.Confirmed.Hostname != "pbx" {
		t.Fatalf("after revert %+v, %v", st, err)
	}
	mn.mu.Lock()
	last := mn.applies[len(mn.applies)-1]
	mn.mu.Unlock()
	if last.Hostname != "pbx" {
		t.Fatalf("reverted to %+v", last)
	}
	if err := c.ConfirmNetwork(ctx, p.ID); !errors.Is(err, ErrRemote) {
		t.Fatalf("confirm after revert: %v", err)
	}
}

func TestNetworkRefusedNamesField(t *testing.T) {
	f, mn, _, _ := startNetwork(t, time.Hour)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	edit := func(fn func(*netspec.Network)) netspec.Network { n := staticNet(); fn(&n); return n }
	tests := []struct {
		n     netspec.Network
		field string
	}{
		{edit(func(n *netspec.Network) { n.Hostname = "bad host" }), "network.hostname"},
		{edit(func(n *netspec.Network) { n.Interfaces[0].Name = "wlan0" }), "network.interfaces[0].name"},
		{edit(func(n *netspec.Network) { n.Interfaces[0].Addresses[0] = netip.MustParsePrefix("127.0.0.5/8") }), "network.interfaces[0].addresses[0]"},
		{edit(func(n *netspec.Network) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("198.51.100.1") }), "network.interfaces[0].gateway4"},
		{edit(func(n *netspec.Network) { n.VLANs[0].ID = 4095 }), "network.vlans[0].id"},
		{edit(func(n *netspec.Network) {
			for i := range 10 {
				n.VLANs = append(n.VLANs, netspec.VLAN{ID: uint16(i + 100), Parent: "eth0", Mode: "dhcp"})
			}
		}), "network.vlans"},
	}
	for _, tt := range tests {
		_, err := c.SetNetwork(ctx, tt.n)
		var re *RemoteError
		if !errors.As(err, &re) || re.Field != tt.field {
			t.Errorf("%s: %v, want field %q", tt.field, err, tt.field)
		}
	}
	// Strict decoding: case-folded and unknown keys are refused with the field.
	for _, body := range []string{
		`{"network":{"HOSTNAME":"x","interfaces":[]}}`,
		`{"network":{"hostname":"x","interfaces":[],"evil":true}}`,
		`{"network":{"hostname":"x","hostname":"y","interfaces":[]}}`,
	} {
		var re *RemoteError
		if err := c.Do(ctx, TypeSetNetwork, rawJSON(body), nil); !errors.As(err, &re) || re.Field == "" {
			t.Errorf("%s: %v", body, err)
		}
	}
	if mn.count() != 0 {
		t.Fatalf("refused requests applied %d networks", mn.count())
	}
}

// rawJSON is sent as is by Client.Do (json.Marshal of a RawMessage).
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func TestTimeRoundTrip(t *testing.T) {
	f, _, _, _ := startNetwork(t, time.Hour)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	st, err := c.GetTime(ctx)
	if err != nil || st.Config.TimeZone != "UTC" {
		t.Fatalf("initial %+v, %v", st, err)
	}
	var re *RemoteError
	if err := c.SetTime(ctx, netspec.Time{TimeZone: "Europe/Nowhere"}); !errors.As(err, &re) || re.Field != "time.time_zone" {
		t.Fatalf("bad zone: %v", err)
	}
	if err := c.SetTime(ctx, netspec.Time{NTP: []string{"224.0.1.1"}, TimeZone: "UTC"}); !errors.As(err, &re) || re.Field != "time.ntp[0]" {
		t.Fatalf("multicast server: %v", err)
	}
	if err := c.SetTime(ctx, netspec.Time{NTP: []string{"pool.ntp.org"}, TimeZone: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetTime(ctx); err != nil || st.Config.TimeZone != "Europe/Berlin" {
		t.Fatalf("after set %+v, %v", st, err)
	}
}

func TestNetworkNotAvailable(t *testing.T) {
	f := start(t, nil)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetNetwork(context.Background()); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("%v", err)
	}
	if _, err := c.GetTime(context.Background()); !errors.Is(err, ErrRemote) {
		t.Fatalf("%v", err)
	}
}

// FuzzSetNetwork feeds arbitrary network and time requests to the
// dispatcher in front of the real committer and clock: never a panic, a
// refused request applies nothing and leaves nothing pending, and what is
// accepted validates against the board's NICs.
func FuzzSetNetwork(f *testing.F) {
	f.Add(uint8(TypeSetNetwork), []byte(`{"network":{"hostname":"pbx","interfaces":[{"name":"eth0","mode":"static","addresses":["192.0.2.10/24"],"gateway4":"192.0.2.1"}],"vlans":[{"id":20,"parent":"eth0","mode":"dhcp"}],"dns":["192.0.2.53"]}}`))
	f.Add(uint8(TypeSetNetwork), []byte(`{"network":{"hostname":"pbx","interfaces":[{"name":"eth1","mode":"dhcp"}]}}`))
	f.Add(uint8(TypeConfirmNetwork), []byte(`{"id":"00000000000000000000000000000000"}`))
	f.Add(uint8(TypeSetTime), []byte(`{"time":{"ntp":["pool.ntp.org"],"time_zone":"Europe/Berlin"}}`))
	f.Add(uint8(TypeGetNetwork), []byte(`{}`))
	f.Fuzz(func(t *testing.T, typ uint8, p []byte) {
		mn := &memNet{}
		cm := netconf.NewCommitter(context.Background(), netconf.CommitterConfig{Apply: mn, NICs: []string{"eth0", "eth1"}, Default: bootNet(), Log: slog.New(slog.DiscardHandler)})
		defer cm.Close()
		clk := clock.New(clock.Config{Log: slog.New(slog.DiscardHandler)})
		srv := &Server{cfg: Config{Network: cm, Clock: clk, System: &sys{}}}
		r := srv.dispatch(Type(typ), p)
		if !r.OK {
			if mn.count() != 0 || cm.State().Pending != nil || clk.State().Config.TimeZone != "UTC" {
				t.Fatalf("refused request changed state: %+v", r)
			}
			return
		}
		if Type(typ) == TypeSetNetwork {
			if err := cm.State().Pending.Network.Validate([]string{"eth0", "eth1"}); err != nil {
				t.Fatalf("accepted network invalid: %v", err)
			}
		}
		if Type(typ) == TypeSetTime {
			if err := clk.State().Config.Validate(); err != nil {
				t.Fatalf("accepted time invalid: %v", err)
			}
		}
	})
}
