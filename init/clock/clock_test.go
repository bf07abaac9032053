package clock

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// answer builds a server response to a request with this nonce.
func answer(nonce uint64, at time.Time, edit func([]byte)) []byte {
	return answerHold(nonce, at, time.Millisecond, edit)
}

func answerHold(nonce uint64, at time.Time, hold time.Duration, edit func([]byte)) []byte {
	b := make([]byte, PacketLen)
	b[0] = 0<<6 | 4<<3 | 4
	b[1] = 2
	binary.BigEndian.PutUint32(b[4:], 0x00000100) // tiny root delay
	binary.BigEndian.PutUint64(b[24:], nonce)
	binary.BigEndian.PutUint64(b[32:], uint64(toNTP(at)))
	binary.BigEndian.PutUint64(b[40:], uint64(toNTP(at.Add(hold))))
	if edit != nil {
		edit(b)
	}
	return b
}

func TestParseResponse(t *testing.T) {
	now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	const nonce = 0x1122334455667788
	tests := []struct {
		name string
		edit func([]byte)
		ok   bool
	}{
		{"good", nil, true},
		{"short", func(b []byte) {}, false}, // truncated below
		{"client mode", func(b []byte) { b[0] = 4<<3 | 3 }, false},
		{"broadcast mode", func(b []byte) { b[0] = 4<<3 | 5 }, false},
		{"version 2", func(b []byte) { b[0] = 2<<3 | 4 }, false},
		{"unsynchronised", func(b []byte) { b[0] = 3<<6 | 4<<3 | 4 }, false},
		{"kiss of death", func(b []byte) { b[1] = 0 }, false},
		{"stratum 16", func(b []byte) { b[1] = 16 }, false},
		{"wrong origin", func(b []byte) { b[31] ^= 1 }, false},
		{"root distance", func(b []byte) { binary.BigEndian.PutUint32(b[8:], 2<<16) }, false},
		{"zero transmit", func(b []byte) { binary.BigEndian.PutUint64(b[40:], 0) }, false},
		{"transmit before receive", func(b []byte) { binary.BigEndian.PutUint64(b[40:], uint64(toNTP(now.Add(-time.Second)))) }, false},
	}
	for _, tt := range tests {
		b := answer(nonce, now, tt.edit)
		if tt.name == "short" {
			b = b[:47]
		}
		a, err := ParseResponse(b, nonce)
		if tt.ok != (err == nil) {
			t.Errorf("%s: err %v", tt.name, err)
			continue
		}
		if err != nil && !errors.Is(err, ErrAnswer) {
			t.Errorf("%s: %v is not ErrAnswer", tt.name, err)
		}
		if tt.ok && !a.Receive.Equal(now) {
			t.Errorf("%s: receive %v, want %v", tt.name, a.Receive, now)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add(answer(7, time.Unix(1_800_000_000, 0), nil), uint64(7))
	f.Fuzz(func(t *testing.T, b []byte, nonce uint64) {
		a, err := ParseResponse(b, nonce)
		if err != nil {
			return
		}
		if binary.BigEndian.Uint64(b[24:]) != nonce || a.Stratum == 0 || a.Stratum > 15 || a.RootDist > MaxRootDistance || a.Transmit.Before(a.Receive) {
			t.Fatalf("accepted %+v", a)
		}
	})
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	floor := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := func(offs ...time.Duration) []Sample {
		out := make([]Sample, len(offs))
		for i, o := range offs {
			out[i] = Sample{Offset: o}
		}
		return out
	}
	tests := []struct {
		name       string
		samples    []Sample
		configured int
		now        time.Time
		want       time.Duration
		err        error
	}{
		{"two agree", s(2*time.Second, 2100*time.Millisecond), 2, now, 2100 * time.Millisecond, nil},
		{"one liar outvoted", s(time.Second, 1100*time.Millisecond, 10*time.Minute), 3, now, 1100 * time.Millisecond, nil},
		{"one of two answered", s(time.Second), 2, now, 0, ErrDisagree},
		{"disagree", s(time.Second, 5*time.Second), 2, now, 0, ErrDisagree},
		{"single server", s(3 * time.Second), 1, now, 3 * time.Second, nil},
		{"none", nil, 2, now, 0, ErrDisagree},
		{"all lie an hour ahead", s(time.Hour, time.Hour), 2, now, 0, ErrStep},
		{"all lie back", s(-20*time.Minute, -20*time.Minute), 2, now, 0, ErrStep},
		{"implausible clock stepped forward", s(now.Sub(time.Unix(0, 0))), 1, time.Unix(0, 0), now.Sub(time.Unix(0, 0)), nil},
		{"implausible clock, answer before floor", s(time.Hour), 1, time.Unix(0, 0), 0, ErrStep},
		{"implausible clock, answer far future", s(100 * 365 * 24 * time.Hour), 1, floor.Add(-time.Hour), 0, ErrStep},
	}
	for _, tt := range tests {
		got, err := Decide(tt.samples, tt.configured, tt.now, floor)
		if !errors.Is(err, tt.err) || err == nil && got != tt.want {
			t.Errorf("%s: %v, %v; want %v, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

// ntpServer answers on addr with its clock shifted by skew; spoof first
// sends an answer that does not echo the request.
func startNTP(t *testing.T, addr string, skew time.Duration, spoof bool) uint16 {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, peer, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if n < PacketLen {
				continue
			}
			nonce := binary.BigEndian.Uint64(buf[40:])
			if spoof {
				c.WriteToUDP(answerHold(nonce+1, time.Now().Add(time.Hour), 0, nil), peer)
			}
			c.WriteToUDP(answerHold(nonce, time.Now().Add(skew), 0, nil), peer)
		}
	}()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestQueryIgnoresSpoofedAnswer(t *testing.T) {
	port := startNTP(t, "127.0.0.1:0", 30*time.Second, true)
	smp, err := Query(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		t.Fatal(err)
	}
	if d := smp.Offset - 30*time.Second; d > 500*time.Millisecond || d < -500*time.Millisecond {
		t.Fatalf("offset %v, want about 30s (the spoofed +1h answer must be ignored)", smp.Offset)
	}
}

// SyncOnce end to end over loopback: each server name resolves to its own
// 127.0.0.x, all on one port, each with its own clock skew.
func TestSyncOnceStepsWithinBounds(t *testing.T) {
	for i, tt := range []struct {
		name  string
		skews []time.Duration
		step  bool
		err   string
	}{
		{"agreeing servers", []time.Duration{5 * time.Second, 5 * time.Second}, true, ""},
		{"one liar outvoted", []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Minute}, true, ""},
		{"spoofed servers an hour ahead", []time.Duration{time.Hour, time.Hour}, false, "sanity bound"},
		{"disagreeing", []time.Duration{5 * time.Second, 50 * time.Second}, false, "disagree"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var steps []time.Duration
			addrs := map[string]netip.Addr{}
			var names []string
			var port uint16
			for j, sk := range tt.skews {
				a := netip.AddrFrom4([4]byte{127, 0, byte(i + 1), byte(j + 2)})
				p := startNTP(t, netip.AddrPortFrom(a, port).String(), sk, false)
				port = p
				name := string(rune('a'+j)) + ".ntp.test"
				addrs[name] = a
				names = append(names, name)
			}
			c := New(Config{Floor: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Port: port,
				Step: func(d time.Duration) error { steps = append(steps, d); return nil },
				Resolve: func(_ context.Context, h string) ([]netip.Addr, error) {
					return []netip.Addr{addrs[h]}, nil
				}})
			// Set through the validator: the names are fine host names.
			if err := c.Set(netspec.Time{NTP: names, TimeZone: "UTC"}); err != nil {
				t.Fatal(err)
			}
			c.SyncOnce(context.Background())
			st := c.State()
			if !tt.step {
				if len(steps) != 0 || !strings.Contains(st.Error, tt.err) {
					t.Fatalf("stepped %v, state %+v", steps, st)
				}
				return
			}
			if len(steps) != 1 || steps[0] < 4*time.Second || steps[0] > 6*time.Second || st.Synced.IsZero() || st.Error != "" {
				t.Fatalf("steps %v, state %+v", steps, st)
			}
		})
	}
}

func TestSetPersistsAndRestore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "time.json")
	c := New(Config{})
	if err := c.Restore(path); err != nil {
		t.Fatal(err)
	}
	if st := c.State(); st.Config.TimeZone != "UTC" {
		t.Fatalf("default %+v", st)
	}
	var fe *netspec.FieldError
	if err := c.Set(netspec.Time{TimeZone: "Nowhere/Town"}); !errors.As(err, &fe) || fe.Field != "time_zone" {
		t.Fatalf("bad zone: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("refused config written")
	}
	want := netspec.Time{NTP: []string{"pool.ntp.org", "192.0.2.123"}, TimeZone: "Europe/Berlin"}
	if err := c.Set(want); err != nil {
		t.Fatal(err)
	}
	c2 := New(Config{})
	if err := c2.Restore(path); err != nil {
		t.Fatal(err)
	}
	if got := c2.State().Config; got.TimeZone != "Europe/Berlin" || strings.Join(got.NTP, ",") != "pool.ntp.org,192.0.2.123" {
		t.Fatalf("restored %+v", got)
	}
	os.WriteFile(path, []byte(`{"version":1,"time":{"ntp":[],"time_zone":"../../x"}}`), 0o600)
	c3 := New(Config{})
	if err := c3.Restore(path); !errors.Is(err, ErrTimeFile) || c3.State().Config.TimeZone != "UTC" {
		t.Fatalf("bad file: %v, %+v", err, c3.State())
	}
}

// Servers that all lie by less than MaxStep each time still cannot walk
// the clock further than MaxStepPerDay.
func TestStepBudget(t *testing.T) {
	var steps []time.Duration
	port := startNTP(t, "127.0.0.1:0", 14*time.Minute, false)
	c := New(Config{Floor: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Port: port,
		Step: func(d time.Duration) error { steps = append(steps, d); return nil }})
	c.conf = netspec.Time{NTP: []string{"127.0.0.1"}, TimeZone: "UTC"} // loopback: set directly, Validate refuses it
	for range 6 {
		c.SyncOnce(context.Background())
	}
	var sum time.Duration
	for _, d := range steps {
		sum += d
	}
	if len(steps) != 4 || sum > MaxStepPerDay || !strings.Contains(c.State().Error, "in 24 h") {
		t.Fatalf("steps %v (sum %v), state %+v", steps, sum, c.State())
	}
}
