package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/reset"
)

// gateReset is PID 1's side as cmd/init builds it: the real gate, and a
// record of the resets it would start.
type gateReset struct {
	gate    *reset.Gate
	mu      sync.Mutex
	asked   []FactoryResetRequest
	started int
}

func (g *gateReset) BeginReset(r FactoryResetRequest) (FactoryResetTicket, error) {
	tok, exp, err := g.gate.Begin()
	if err != nil {
		return FactoryResetTicket{}, err
	}
	g.mu.Lock()
	g.asked = append(g.asked, r)
	g.mu.Unlock()
	return FactoryResetTicket{Token: tok, Expires: exp, Remaining: time.Until(exp)}, nil
}

func (g *gateReset) ConfirmReset(token string) error {
	if err := g.gate.Confirm(token); err != nil {
		return err
	}
	g.mu.Lock()
	g.started++
	g.mu.Unlock()
	return nil
}

func (g *gateReset) count() (int, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.asked), g.started
}

func TestFactoryReset(t *testing.T) {
	gr := &gateReset{gate: reset.NewGate(reset.GateConfig{Burst: 2})}
	f := start(t, func(c *Config) { c.Reset = gr })
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	refusals := []struct {
		name  string
		typ   Type
		body  any
		field string
	}{
		{"no actor", TypeFactoryResetBegin, FactoryResetRequest{}, "actor"},
		{"control character", TypeFactoryResetBegin, FactoryResetRequest{Actor: "admin\x1b[2J"}, "actor"},
		{"long source", TypeFactoryResetBegin, FactoryResetRequest{Actor: "a", Source: strings.Repeat("x", 200)}, "source"},
		{"unknown field", TypeFactoryResetBegin, map[string]any{"actor": "a", "skip_erase": true}, "skip_erase"},
		{"short token", TypeFactoryResetConfirm, FactoryResetConfirm{Token: "abc"}, "token"},
	}
	for _, r := range refusals {
		err := c.Do(ctx, r.typ, r.body, nil)
		var re *RemoteError
		if !errors.As(err, &re) || re.Field != r.field {
			t.Errorf("%s: err %v, want a refusal naming %q", r.name, err, r.field)
		}
	}
	if a, s := gr.count(); a != 0 || s != 0 {
		t.Fatalf("refusals reached PID 1's gate: %d asked, %d started", a, s)
	}

	// A token PID 1 did not issue starts nothing.
	if err := c.ConfirmFactoryReset(ctx, strings.Repeat("0", 32)); !errors.Is(err, ErrRemote) {
		t.Fatalf("confirm without a request: %v", err)
	}
	tk, err := c.BeginFactoryReset(ctx, FactoryResetRequest{Actor: "owner1", Source: "192.0.2.10"})
	if err != nil || len(tk.Token) != 32 || tk.Remaining <= 0 {
		t.Fatalf("begin: %+v %v", tk, err)
	}
	if err := c.ConfirmFactoryReset(ctx, tk.Token); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfirmFactoryReset(ctx, tk.Token); !errors.Is(err, ErrRemote) {
		t.Fatalf("token replayed: %v", err)
	}
	if a, s := gr.count(); a != 1 || s != 1 {
		t.Fatalf("%d asked, %d started; want 1, 1", a, s)
	}
	// The rate limit holds whatever edgepbxd sends.
	if _, err := c.BeginFactoryReset(ctx, FactoryResetRequest{Actor: "x"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.BeginFactoryReset(ctx, FactoryResetRequest{Actor: "x"}); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "too many") {
		t.Fatalf("third begin with burst 2: %v", err)
	}

	// Without a reset wired, the request is refused.
	f2 := start(t, nil)
	c2, err := Dial(f2.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.BeginFactoryReset(ctx, FactoryResetRequest{Actor: "a"}); !errors.Is(err, ErrRemote) {
		t.Fatalf("no reset wired: %v", err)
	}
}

// FuzzFactoryReset: no payload starts a reset without the token PID 1
// issued, and a refused begin never reaches the gate.
func FuzzFactoryReset(f *testing.F) {
	f.Add(true, []byte(`{"token":"00000000000000000000000000000000"}`))
	f.Add(false, []byte(`{"actor":"owner1","source":"192.0.2.1"}`))
	f.Add(false, []byte(`{"actor":"","source":"x"}`))
	f.Fuzz(func(t *testing.T, confirm bool, p []byte) {
		gr := &gateReset{gate: reset.NewGate(reset.GateConfig{})}
		srv := &Server{cfg: Config{System: &sys{}, Reset: gr}}
		if _, _, err := gr.gate.Begin(); err != nil {
			t.Fatal(err)
		}
		typ := TypeFactoryResetBegin
		if confirm {
			typ = TypeFactoryResetConfirm
		}
		r := srv.dispatch(typ, p)
		asked, started := gr.count()
		if started != 0 {
			t.Fatalf("reset started by %q", p)
		}
		if !r.OK && asked != 0 {
			t.Fatalf("refused begin reached the gate: %q", p)
		}
	})
}
