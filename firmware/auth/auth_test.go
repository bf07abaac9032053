package auth

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var cheap = Params{Time: 1, MemoryKiB: 1024, Threads: 1}

func TestPasswordPolicy(t *testing.T) {
	high, medium := DefaultPolicy(), DefaultPolicy()
	medium.PasswordLevel = LevelMedium
	tests := []struct {
		name, user, pw string
		p              Policy
		want           error
	}{
		{"empty", "alice", "", high, ErrPasswordEmpty},
		{"short", "alice", "Xk3#pq9!", high, ErrPasswordShort},
		{"digits only high", "alice", "849302718465", high, ErrPasswordWeak},      // 120 points
		{"digits only medium", "alice", "849302718465", medium, nil},              // 120 ≥ 120
		{"19 digits high", "alice", "8493027184659203746", high, ErrPasswordWeak}, // 190
		{"20 digits high", "alice", "84930271846592037461", high, nil},            // 200
		{"letters high", "alice", "correcthorsebattery", high, nil},
		{"contains username", "alice", "my-alice-is-7-cats!", high, ErrPasswordUsername},
		{"username any case", "alice", "my-ALICE-is-7-cats!", high, ErrPasswordUsername},
		{"common inside", "alice", "Password!2024xyz", high, ErrPasswordCommon},
		{"common keyboard", "alice", "zz-qwertyuiop-zz", high, ErrPasswordCommon},
		{"repetitive", "alice", "aaaabbbbaaaabbbb", high, ErrPasswordRepetitive},
		{"too long", "alice", strings.Repeat("xY7#", 65), high, ErrPasswordLong},
		{"bad utf8", "alice", "Gr\xffuen-Baum-7-Hof!", high, ErrPasswordInvalidUTF8},
		{"unicode ok", "alice", "Grün-Bäume-7-Höfe!", high, nil},
		{"min length raised", "alice", "tr7#Kq2!vm9Lw", func() Policy { p := high; p.MinLength = 16; return p }(), ErrPasswordShort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPassword(tc.p, tc.user, tc.pw)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("CheckPassword(%q) = %v, want %v", tc.pw, err, tc.want)
			}
		})
	}
}

func TestScore(t *testing.T) {
	for pw, want := range map[string]int{"": 0, "1": 10, "a": 26, "Z": 26, "#": 28, "a1#": 64, "ü": 26, " ": 28} {
		if got := Score(pw); got != want {
			t.Errorf("Score(%q) = %d, want %d", pw, got, want)
		}
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("default policy invalid: %v", err)
	}
	bad := []func(*Policy){
		func(p *Policy) { p.MinLength = 8 },
		func(p *Policy) { p.PasswordLevel = "low" },
		func(p *Policy) { p.LockoutThreshold = 0 },
		func(p *Policy) { p.IdleSeconds = MinIdleSeconds - 1 },
		func(p *Policy) { p.AbsoluteSeconds = p.IdleSeconds - 1 },
		func(p *Policy) { p.TOTPRoles = []Role{"root"} },
		func(p *Policy) { p.TokenDays = 0 },
		func(p *Policy) { p.HistoryDays = 1000 },
	}
	for i, f := range bad {
		p := DefaultPolicy()
		f(&p)
		if err := p.Validate(); !errors.Is(err, ErrPolicy) {
			t.Errorf("case %d: Validate = %v, want ErrPolicy", i, err)
		}
	}
}

func TestHashRoundTrip(t *testing.T) {
	h := NewHasher(cheap, 2, 4)
	enc, err := h.Hash(context.Background(), "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("encoding %q", enc)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horsE": false, "": false} {
		ok, rehash, err := h.Verify(context.Background(), pw, enc)
		if err != nil || ok != want || rehash {
			t.Errorf("Verify(%q) = %v %v %v", pw, ok, rehash, err)
		}
	}
	h2 := NewHasher(Params{Time: 2, MemoryKiB: 1024, Threads: 1}, 1, 1)
	if _, rehash, _ := h2.Verify(context.Background(), "x", enc); !rehash {
		t.Error("parameter change should ask for a rehash")
	}
}

func TestParseHashBounds(t *testing.T) {
	for _, s := range []string{
		"", "$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", // 4 TiB
		"$argon2id$v=19$m=1024,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=300$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=1$$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$t=1,m=1024,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
	} {
		if _, _, _, err := ParseHash(s); !errors.Is(err, ErrHashFormat) {
			t.Errorf("ParseHash(%q) = %v, want ErrHashFormat", s, err)
		}
	}
}

// TestHasherBound: with every slot and queue place taken, a further login
// is refused at once instead of allocating another argon2 buffer.
func TestHasherBound(t *testing.T) {
	h := NewHasher(cheap, 1, 2)
	rel1, err := h.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan error)
	go func() { _, err := h.acquire(ctx); waiting <- err }()
	for len(h.queue) < 2 { // the second caller is queued
		time.Sleep(time.Millisecond)
	}
	if _, err := h.Hash(context.Background(), "x"); !errors.Is(err, ErrBusy) {
		t.Fatalf("third caller: %v, want ErrBusy", err)
	}
	cancel()
	if err := <-waiting; !errors.Is(err, context.Canceled) {
		t.Fatalf("queued caller: %v", err)
	}
	rel1()
	if _, err := h.Hash(context.Background(), "x"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestSetupCode(t *testing.T) {
	c := SetupCode("ABCD-EFGH-JKLM")
	for in, want := range map[string]bool{"ABCD-EFGH-JKLM": true, "abcd efgh jklm": true, "abcdefghjklm": true, "ABCD-EFGH-JKLN": false, "": false} {
		if got := c.CheckSetupCode(in); got != want {
			t.Errorf("Check(%q) = %v", in, got)
		}
	}
	if SetupCode("").CheckSetupCode("") {
		t.Error("empty code must match nothing")
	}
}

func TestTOTPWindow(t *testing.T) {
	secret := "JBSWY3DPEHPK3PXP"
	now := time.Unix(1_800_000_000, 0)
	code := func(at time.Time) string {
		c, err := totpCode(secret, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name     string
		codeAt   time.Time
		lastStep int64
		ok       bool
	}{
		{"now", now, 0, true},
		{"one step early", now.Add(-30 * time.Second), 0, true},
		{"one step late", now.Add(30 * time.Second), 0, true},
		{"two steps early", now.Add(-60 * time.Second), 0, false},
		{"two steps late", now.Add(60 * time.Second), 0, false},
		{"replayed", now, now.Unix() / 30, false},
		{"older than last used", now.Add(-30 * time.Second), now.Unix()/30 - 1, false},
	}
	for _, tc := range tests {
		_, ok := matchTOTP(secret, code(tc.codeAt), now, tc.lastStep)
		if ok != tc.ok {
			t.Errorf("%s: ok = %v, want %v", tc.name, ok, tc.ok)
		}
	}
	if _, ok := matchTOTP(secret, "12345", now, 0); ok {
		t.Error("5-digit code accepted")
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, hashes := newRecoveryCodes("alice")
	if len(codes) != recoveryCount || len(hashes) != recoveryCount {
		t.Fatal("count")
	}
	seen := map[string]bool{}
	for i, c := range codes {
		if len(c) != 14 || seen[c] || strings.Contains(hashes[i], c) {
			t.Errorf("code %q", c)
		}
		seen[c] = true
		if recoveryHash("alice", strings.ToUpper(c)) != hashes[i] || recoveryHash("bob", c) == hashes[i] {
			t.Errorf("hash of %q", c)
		}
	}
}

func TestLimiter(t *testing.T) {
	l := newLimiter(3, time.Minute, 2)
	now := time.Unix(0, 0)
	for i := 0; i < 3; i++ {
		if !l.allow("a", now) {
			t.Fatal("within limit refused")
		}
	}
	if l.allow("a", now.Add(59*time.Second)) {
		t.Fatal("over limit allowed")
	}
	if !l.allow("a", now.Add(61*time.Second)) {
		t.Fatal("window did not slide")
	}
	l.allow("b", now)
	l.allow("c", now) // evicts one key, map stays bounded
	if len(l.hits) > 2 {
		t.Fatalf("limiter holds %d keys", len(l.hits))
	}
}

func newService(t *testing.T) (*Service, *fakeClock) {
	return newServiceWith(t, NewHasher(cheap, 2, 16))
}

// newServiceB is a claimed service with the production hasher and a policy
// that never throttles, for benchmarks.
func newServiceB(b *testing.B) (*Service, *fakeClock) {
	s, clk := newServiceWith(b, NewHasher(DefaultParams, DefaultConcurrency, DefaultQueue))
	if _, err := s.Claim(context.Background(), Client{}, "AAAA-BBBB-CCCC", "root1", "tr7#Kq2!vm9Lw"); err != nil {
		b.Fatal(err)
	}
	p := DefaultPolicy()
	p.SourceMaxFailures, p.SprayAccounts, p.LockoutThreshold = 1000, 1000, 20
	if err := s.SetPolicy(Principal{Username: "root1"}, "", p); err != nil {
		b.Fatal(err)
	}
	return s, clk
}

func newServiceWith(t testing.TB, h *Hasher) (*Service, *fakeClock) {
	t.Helper()
	db := storetest.Open(t, nil)
	clk := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	s, err := New(Config{DB: db, Clock: clk, Audit: audit.New(db, clk), Hasher: h, SetupCode: SetupCode("AAAA-BBBB-CCCC"),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func TestLastAdminProtected(t *testing.T) {
	s, _ := newService(t)
	c := Client{}
	if _, err := s.Claim(context.Background(), c, "AAAA-BBBB-CCCC", "root1", "tr7#Kq2!vm9Lw"); err != nil {
		t.Fatal(err)
	}
	admin := Principal{Username: "root1", Role: RoleAdmin}
	pr := Proof{Password: "tr7#Kq2!vm9Lw"}
	if err := s.SetRole(context.Background(), admin, c, pr, "root1", RoleAuditor); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("demote last admin: %v", err)
	}
	if err := s.DeleteAccount(admin, "", "root1"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("delete last admin: %v", err)
	}
	if err := s.CreateAccount(context.Background(), admin, c, pr, "second", RoleAdmin, "tr7#Kq2!vm9Lw-x"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(context.Background(), admin, c, pr, "root1", RoleAuditor); err != nil {
		t.Fatalf("demote with another admin: %v", err)
	}
}

func TestHistoryRetention(t *testing.T) {
	s, clk := newService(t)
	c := Client{}
	for i := 0; i < 5; i++ {
		s.history(c, "x", "failed", location{})
		clk.Advance(4 * 24 * time.Hour)
	}
	// Entries at day 0, 4, 8, 12, 16; writing at day 20 drops those older than day 6.
	s.history(c, "x", "failed", location{})
	h, err := s.History("", 0)
	if err != nil || len(h) != 4 {
		t.Fatalf("history has %d entries, want 4 (%v)", len(h), err)
	}
}
