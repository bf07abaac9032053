package sip

import (
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
		{"other source", now, "192.0.2.2", hdr(AlgMD5, "101", "pw", nonce, "00000005"), AuthFailed},
		{"forged nonce", now, "192.0.2.1", hdr(AlgMD5, "101", "pw", strings.Repeat("A", 43), "00000001"), AuthFailed},
		{"stale", now.Add(2 * time.Minute), "192.0.2.1", hdr(AlgMD5, "101", "pw", nonce, "00000009"), AuthStale},
		{"nc zero", now, "192.0.2.1", hdr(AlgMD5, "101", "pw", nonce, "00000000"), AuthFailed},
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

// TestNonceTableBounded: the nonce-count table never grows: with every
// slot held by a live nonce a new one is refused (fail closed) and counted,
// known nonces still count up, and slots come back once their nonce expires.
func TestNonceTableBounded(t *testing.T) {
	n, _ := NewNonces(time.Minute, 16) // 32 slots: 4 shards of one 8-way bucket
	t0 := time.Unix(1_700_000_000, 0)
	until := t0.Add(time.Minute)
	slots := n.table.slots()
	refused := 0
	for k := uint64(1); k <= uint64(4*slots); k++ {
		if n.use(t0, k, until, 1, 0) == useReplay {
			refused++
		}
	}
	if live := n.table.live(t0); live != slots || refused != 3*slots || n.Full.Load() != uint64(refused) {
		t.Fatalf("slots %d: live %d, refused %d, full %d", slots, live, refused, n.Full.Load())
	}
	if got := n.use(t0, 1, until, 2, 0); got != useOK {
		t.Fatalf("known nonce counting up: %v", got)
	}
	later := until.Add(2 * time.Second)
	if n.table.live(later) != 0 {
		t.Fatal("expired nonces still held")
	}
	if got := n.use(later, uint64(10*slots), later.Add(time.Minute), 1, 0); got != useOK {
		t.Fatalf("after expiry: %v", got)
	}
}
