package auth

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// TestMetricsScopeReadsNothingElse: a metrics token reads /metrics only, is
// never combined with another scope, and only roles that may read metrics
// can issue one; read tokens do not get metrics.
func TestMetricsScopeReadsNothingElse(t *testing.T) {
	s, _ := newService(t)
	ctx, c := context.Background(), Client{}
	const pw = "tr7#Kq2!vm9Lw"
	if _, err := s.Claim(ctx, c, "AAAA-BBBB-CCCC", "root1", pw); err != nil {
		t.Fatal(err)
	}
	admin := Principal{Username: "root1", Role: RoleAdmin}
	pr := Proof{Password: pw}
	if err := s.CreateAccount(ctx, admin, c, pr, "oper", RoleOperator, pw+"-op"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		actor  Principal
		proof  Proof
		scopes []string
	}{
		{"combined with read", admin, pr, []string{ScopeMetrics, ScopeRead}},
		{"combined with admin", admin, pr, []string{ScopeAdmin, ScopeMetrics}},
		{"operator may not read metrics", Principal{Username: "oper", Role: RoleOperator}, Proof{Password: pw + "-op"}, []string{ScopeMetrics}},
	} {
		if _, _, err := s.CreateToken(ctx, tc.actor, c, tc.proof, "zabbix", tc.scopes, 30); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: CreateToken = %v, want ErrBadToken", tc.name, err)
		}
	}
	secret, _, err := s.CreateToken(ctx, admin, c, pr, "zabbix", []string{ScopeMetrics}, 30)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.TokenPrincipal(secret)
	if err != nil {
		t.Fatal(err)
	}
	for _, perm := range Permissions {
		if got, want := p.Can(perm), perm == PermMetricsRead; got != want {
			t.Errorf("metrics token Can(%s) = %v, want %v", perm, got, want)
		}
	}
	read, _, err := s.CreateToken(ctx, admin, c, pr, "ro", []string{ScopeRead}, 30)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.TokenPrincipal(read); err != nil || p.Can(PermMetricsRead) {
		t.Errorf("read token: Can(metrics.read) = %v (%v), want false", p.Can(PermMetricsRead), err)
	}
}

// TestLoginCounts: successes, failures and lockouts are counted by the
// service that decides them.
func TestLoginCounts(t *testing.T) {
	s, _ := newService(t)
	ctx := context.Background()
	const pw = "tr7#Kq2!vm9Lw"
	if _, err := s.Claim(ctx, Client{}, "AAAA-BBBB-CCCC", "root1", pw); err != nil {
		t.Fatal(err)
	}
	c := Client{Addr: netip.MustParseAddr("192.0.2.7")}
	if _, err := s.Login(ctx, c, "root1", pw); err != nil {
		t.Fatal(err)
	}
	p, _ := s.Policy()
	for range p.LockoutThreshold {
		if _, err := s.Login(ctx, c, "root1", "wrong-"+pw); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	want := LoginCounts{OK: 1, Failed: uint64(p.LockoutThreshold), Lockouts: 1}
	if got := s.LoginCounts(); got != want {
		t.Fatalf("LoginCounts = %+v, want %+v", got, want)
	}
}
