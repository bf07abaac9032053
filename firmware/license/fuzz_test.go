package license_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/license"
)

// FuzzParseResponse feeds arbitrary bytes to the response parser: it must
// never panic, never accept more than MaxResponseBytes, and whatever it
// accepts must be a well-formed envelope of the current version (in practice
// only the signed seed survives: mutations break the signature).
func FuzzParseResponse(f *testing.F) {
	seed := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := seed.Public().(ed25519.PublicKey)
	good, err := license.SignResponse(seed, &license.Response{V: 1, Nonce: "00112233445566778899aabbccddeeff",
		Serial: "EPX-1", InstallID: "i", LicenceID: "L", Status: license.StatusOK, ServerTime: 1767225600,
		ValidUntil: 1798761600, Perf: license.PerfOK, Advisories: []license.Advisory{{ID: "A", Severity: "high", Disable: []string{"webrtc"}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"payload":"","sig":""}`))
	f.Add([]byte(`{"payload":"e30=","sig":"AAAA"}`))
	f.Add([]byte(`null`))
	f.Add(append(bytes.Clone(good), good...))
	f.Fuzz(func(t *testing.T, raw []byte) {
		resp, err := license.ParseResponse(raw, pub)
		if err != nil {
			if resp != nil {
				t.Fatal("error with a response")
			}
			return
		}
		if len(raw) > license.MaxResponseBytes {
			t.Fatalf("accepted %d bytes", len(raw))
		}
		// Accepted: the envelope must be well formed JSON.
		var env license.Envelope
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatalf("accepted undecodable envelope: %v", err)
		}
		if resp.V != license.ProtocolVersion {
			t.Fatalf("accepted version %d", resp.V)
		}
	})
}

// FuzzRequest is the server side: decode and validate an untrusted request.
func FuzzRequest(f *testing.F) {
	good, _ := json.Marshal(license.Request{V: 1, Nonce: "00112233445566778899aabbccddeeff", Serial: "EPX-1",
		InstallID: "inst", Fingerprint: license.Fingerprint("x"), Firmware: "1.0.0", LicenceID: "LIC-1"})
	f.Add(good)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"serial":"a\nb"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var r license.Request
		if err := json.Unmarshal(raw, &r); err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			return
		}
		out, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		// A valid request is always small enough to send.
		if len(out) > license.MaxRequestBytes {
			t.Fatalf("valid request of %d bytes", len(out))
		}
	})
}
