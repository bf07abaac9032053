package sipedge

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseDigest(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
		want     Credentials
	}{
		{"full", `Digest username="101", realm="edgepbx", nonce="n1", uri="sip:pbx", response="abc", algorithm=SHA-256, cnonce="c", qop=auth, nc=00000001`, true,
			Credentials{Username: "101", Realm: "edgepbx", Nonce: "n1", URI: "sip:pbx", Response: "abc", Algorithm: "SHA-256", CNonce: "c", QOP: "auth", NC: "00000001"}},
		{"case and spaces", `digest   USERNAME = "a\"b" ,nonce="n",uri="u",response="r"`, true,
			Credentials{Username: `a"b`, Nonce: "n", URI: "u", Response: "r"}},
		{"other scheme", `NoOneKnowsThisScheme opaque-data=here`, false, Credentials{}},
		{"duplicate", `Digest username="a", username="b", nonce="n", uri="u", response="r"`, false, Credentials{}},
		{"unterminated", `Digest username="a, nonce="n"`, false, Credentials{}},
		{"missing response", `Digest username="a", nonce="n", uri="u"`, false, Credentials{}},
		{"control char", "Digest username=\"a\x01\", nonce=\"n\", uri=\"u\", response=\"r\"", false, Credentials{}},
		{"bad token", `Digest username=a"b, nonce="n", uri="u", response="r"`, false, Credentials{}},
		{"no comma", `Digest username="a" nonce="n"`, false, Credentials{}},
		{"huge", "Digest username=\"" + strings.Repeat("a", 5000) + "\"", false, Credentials{}},
		{"too many", "Digest " + strings.Repeat("x=1, ", 40) + "username=a", false, Credentials{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDigest(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

type mapHA1 map[string]string

func (m mapHA1) HA1(user, alg string) (string, bool) {
	h, ok := m[user+"/"+alg]
	return h, ok
}

func TestVerify(t *testing.T) {
	n, _ := NewNonces(time.Minute, 100)
	users := mapHA1{"101/MD5": HA1(AlgMD5, "101", "r", "pw"), "101/SHA-256": HA1(AlgSHA256, "101", "r", "pw")}
	a, _ := NewAuthenticator("r", []string{AlgSHA256, AlgMD5}, n, users)
	now := time.Unix(1_700_000_000, 0)
	src := srcAddr("192.0.2.1")
	nonce := n.Issue(now, src)
	hdr := func(alg, user, pw, nonce, nc string) string {
		return authHeader(alg, user, pw, "r", nonce, "sip:pbx", nc, "cn")
	}
	tests := []struct {
		name string
		at   time.Time
		from string
		h    string
		want AuthResult
	}{
		{"ok sha", now, "192.0.2.1", hdr(AlgSHA256, "101", "pw", nonce, "00000001"), AuthOK},
		{"replay", now, "192.0.2.1", hdr(AlgSHA256, "101", "pw", nonce, "00000001"), AuthReplayed},
		{"next nc md5", now, "192.0.2.1", hdr(AlgMD5, "101", "pw", nonce, "00000002"), AuthOK},
		{"wrong password", now, "192.0.2.1", hdr(AlgMD5, "101", "bad", nonce, "00000003"), AuthFailed},
		{"unknown user", now, "192.0.2.1", hdr(AlgMD5, "999", "pw", nonce, "00000004"), AuthFailed},
		// A nonce issued to another address, a made-up one, a stale one or
		// bad parameters are no evidence against the sender's address (it
		// may be spoofed): never AuthFailed, which the guard charges.
		{"other source", now, "192.0.2.2", hdr(AlgMD5, "101", "pw", nonce, "00000005"), AuthForged},
		{"other source wrong password", now, "192.0.2.2", hdr(AlgMD5, "101", "bad", nonce, "00000005"), AuthForged},
		{"forged nonce", now, "192.0.2.1", hdr(AlgMD5, "101", "pw", strings.Repeat("A", 43), "00000001"), AuthForged},
		{"stale", now.Add(2 * time.Minute), "192.0.2.1", hdr(AlgMD5, "101", "pw", nonce, "00000009"), AuthStale},
		{"stale wrong password", now.Add(2 * time.Minute), "192.0.2.1", hdr(AlgMD5, "101", "bad", nonce, "0000000a"), AuthStale},
		{"nc zero", now, "192.0.2.1", hdr(AlgMD5, "101", "pw", nonce, "00000000"), AuthInvalid},
		{"wrong realm", now, "192.0.2.1", authHeader(AlgMD5, "101", "pw", "other", nonce, "sip:pbx", "0000000b", "cn"), AuthInvalid},
		{"not digest", now, "192.0.2.1", "Basic abc", AuthNone},
	}
	for _, tt := range tests {
		got, _ := a.Verify(tt.at, srcAddr(tt.from), "REGISTER", tt.h)
		if got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func FuzzParseDigest(f *testing.F) {
	f.Add(`Digest username="101", realm="edgepbx", nonce="n1", uri="sip:pbx", response="abc", algorithm=SHA-256, cnonce="c", qop=auth, nc=00000001`)
	f.Add(`Digest username="a\"b",nonce=x,uri=y,response=z`)
	f.Add(`Digest `)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseDigest(s)
		if err == nil && (c.Username == "" || c.Nonce == "" || c.Response == "" || c.URI == "") {
			t.Fatal("accepted credentials without required fields")
		}
	})
}

func FuzzVerify(f *testing.F) {
	f.Add(`Digest username="101", realm="r", nonce="AAAA", uri="sip:pbx", response="abc", cnonce="c", qop=auth, nc=00000001`)
	n, _ := NewNonces(time.Minute, 100)
	a, _ := NewAuthenticator("r", []string{AlgMD5}, n, mapHA1{})
	f.Fuzz(func(t *testing.T, s string) {
		if r, _ := a.Verify(time.Now(), srcAddr("192.0.2.1"), "REGISTER", s); r == AuthOK || r == AuthStale {
			t.Fatalf("authenticated with no users: %v", r)
		}
	})
}

// TestNonceTableEvictsByAge: the nonce-count table never grows and never
// refuses: with every slot held by a live nonce a newer one takes the slot
// of the oldest, and the forgotten nonce comes back as stale (a new
// challenge, charged to nobody), never as accepted (no replay) nor as a
// replay. Known nonces still count up; slots come back once their nonce
// expires.
func TestNonceTableEvictsByAge(t *testing.T) {
	n, _ := NewNonces(time.Minute, 16) // 32 slots: 4 shards of one 8-way bucket
	t0 := time.Unix(1_700_000_000, 0)
	until := t0.Add(time.Minute)
	slots := n.table.slots()
	src := srcAddr("192.0.2.1")
	iss := func(k uint64) int64 { return t0.UnixNano() + int64(k) }
	total := uint64(4 * slots)
	for k := uint64(1); k <= total; k++ {
		// Every key its own extension and source: no quota applies.
		u := fmt.Sprint("u", k)
		s := netip.AddrFrom4([4]byte{10, 0, byte(k >> 8), byte(k)})
		if got := n.use(t0, k, iss(k), until, 1, 0, u, s); got != useOK {
			t.Fatalf("nonce %d refused: %v", k, got)
		}
	}
	if live := n.table.live(t0); live != slots || n.Evicted.Load() != total-uint64(slots) {
		t.Fatalf("slots %d: live %d, evicted %d", slots, live, n.Evicted.Load())
	}
	// The newest nonce is held and counts up; the oldest was forgotten and
	// is stale at any nc.
	if got := n.use(t0, total, iss(total), until, 2, 0, fmt.Sprint("u", total), src); got != useOK {
		t.Fatalf("newest nonce counting up: %v", got)
	}
	for _, nc := range []uint32{1, 2} {
		if got := n.use(t0, 1, iss(1), until, nc, 0, "u1", src); got != useStale {
			t.Fatalf("forgotten nonce at nc %d: %v, want stale", nc, got)
		}
	}
	later := until.Add(2 * time.Second)
	if n.table.live(later) != 0 {
		t.Fatal("expired nonces still held")
	}
	if got := n.use(later, 10*total, later.UnixNano(), later.Add(time.Minute), 1, 0, "x", src); got != useOK {
		t.Fatalf("after expiry: %v", got)
	}
}

// TestNonceQuotaPerOwner: one extension taking fresh nonces without end,
// far past the table's size, evicts only its own nonces (those past its
// quota are marked to go first): another phone's nonce, older than all of
// them, stays held and keeps counting up; the flooder's oldest come back
// stale, never accepted again. Nothing is refused.
func TestNonceQuotaPerOwner(t *testing.T) {
	n, _ := NewNonces(5*time.Minute, 64) // 128 slots
	t0 := time.Unix(1_700_000_000, 0)
	until := t0.Add(5 * time.Minute)
	phone := srcAddr("10.0.0.2")
	if got := n.use(t0, 1, t0.UnixNano(), until, 1, 0, "102", phone); got != useOK {
		t.Fatal(got)
	}
	atk := srcAddr("10.0.0.66")
	flood := 20 * n.table.slots()
	for k := 0; k < flood; k++ {
		if got := n.use(t0, uint64(1000+k), t0.UnixNano()+1+int64(k), until, 1, 0, "101", atk); got != useOK {
			t.Fatalf("flood nonce %d: %v", k, got)
		}
	}
	if n.Evicted.Load() == 0 || n.table.live(t0) != n.table.slots() {
		t.Fatalf("the flood did not fill the table: evicted %d, live %d", n.Evicted.Load(), n.table.live(t0))
	}
	if got := n.use(t0, 1, t0.UnixNano(), until, 2, 0, "102", phone); got != useOK {
		t.Fatalf("other phone's nonce: %v", got)
	}
	if got := n.use(t0, 1000, t0.UnixNano()+1, until, 2, 0, "101", atk); got != useStale {
		t.Fatalf("flooder's oldest nonce: %v, want stale", got)
	}
}
