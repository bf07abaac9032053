package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestNetMode(t *testing.T) {
	tests := []struct {
		flag    string
		euid    int
		want    string
		wantErr bool
	}{
		{"auto", 0, "tap", false},
		{"auto", 1000, "user", false},
		{"", 0, "tap", false},
		{"tap", 1000, "tap", false}, // asked for: NewRunNet says what is missing
		{"user", 0, "user", false},
		{"bridge", 0, "", true},
	}
	for _, tc := range tests {
		got, err := netMode(tc.flag, tc.euid)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("netMode(%q, %d) = %q, %v; want %q (error %v)", tc.flag, tc.euid, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestHowTo: the printed softphone settings never show an address that does
// not answer (the UDP line under user networking was one).
func TestHowTo(t *testing.T) {
	tests := []struct {
		name     string
		r        reach
		want     []string
		dontWant []string
	}{
		{"tap", reach{Admin: "10.213.0.130", SIPUDP: "10.213.0.130:5060", SIPTCP: "10.213.0.130:5060", TLS: "10.213.0.130:5061", Audio: true, From: "10.213.0.1"},
			[]string{"https://10.213.0.130/", "server 10.213.0.130:5060  transport UDP", "server 10.213.0.130:5060  transport TCP",
				"server 10.213.0.130:5061  transport TLS", "sha256 AB:CD", "self-signed", "from 10.213.0.1", "setup code:  ABCD-EFGH-JKMN"},
			[]string{"not available", "none with"}},
		{"user", reach{Admin: "127.0.0.1:4443", SIPTCP: "127.0.0.1:5070", TLS: "127.0.0.1:5071"},
			[]string{"https://127.0.0.1:4443/", "server 127.0.0.1:5070  transport TCP", "server 127.0.0.1:5071  transport TLS",
				"UDP:       not available", "audio:     none"},
			[]string{"transport UDP"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			writeHowTo(&b, tc.r, "ABCD-EFGH-JKMN", "AB:CD")
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in:\n%s", w, b.String())
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(b.String(), w) {
					t.Errorf("unexpected %q in:\n%s", w, b.String())
				}
			}
		})
	}
}
