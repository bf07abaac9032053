package auth

import (
	"context"
	"net/netip"
	"sync"
	"testing"
)

// TestAdminAttacksReported: failed admin logins and the ban of a source
// spraying accounts reach the Attacks hook (the security log, so the
// intrusion report and remote syslog see admin-port attacks).
func TestAdminAttacksReported(t *testing.T) {
	s, _ := newService(t)
	var mu sync.Mutex
	var got []AdminAttack
	s.attacks = func(a AdminAttack) { mu.Lock(); got = append(got, a); mu.Unlock() }
	ctx := context.Background()
	if _, err := s.Claim(ctx, Client{}, "AAAA-BBBB-CCCC", "root1", "tr7#Kq2!vm9Lw"); err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy()
	p.SprayAccounts = 2
	if err := s.SetPolicy(Principal{Username: "root1"}, "", p); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("203.0.113.7")
	for _, u := range []string{"root1", "admin", "operator"} {
		if _, err := s.Login(ctx, Client{Addr: src}, u, "wrong-password-1"); err == nil {
			t.Fatalf("%s: wrong password accepted", u)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var fails, bans int
	for _, a := range got {
		switch {
		case a.Ban && a.Prefix.Contains(src) && a.Reason == "admin-login-spray":
			bans++
		case !a.Ban && a.Source == src && a.User != "":
			fails++
		default:
			t.Errorf("unexpected %+v", a)
		}
	}
	if fails != 3 || bans < 1 {
		t.Errorf("%d failures, %d bans reported: %+v", fails, bans, got)
	}
}
