package license_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	f.Add(legacyEnvelope(f, good))
	f.Add([]byte(`{"p":{},"payload":"e30=","sig":""}`))
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
	f.Add([]byte(`{"v":1,"audit":"42.q6urq6urq6urq6urq6urqw"}`))
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

// legacyEnvelope rewrites an envelope in the base64 form (payload).
func legacyEnvelope(t testing.TB, env []byte) []byte {
	t.Helper()
	var e license.Envelope
	if err := json.Unmarshal(env, &e); err != nil || len(e.P) == 0 {
		t.Fatalf("envelope %s: %v", env, err)
	}
	out, err := json.Marshal(license.Envelope{Payload: base64.StdEncoding.EncodeToString(e.P), Sig: e.Sig})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEnvelopeForms: the payload travels inline (what licensed sends) or
// in base64; the signature covers the same bytes either way. Both forms at
// once, or neither, is malformed.
func TestEnvelopeForms(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	pub := key.Public().(ed25519.PublicKey)
	r := &license.Response{V: 1, Nonce: "00112233445566778899aabbccddeeff", Serial: "EPX-1", InstallID: "i", LicenceID: "L",
		Status: license.StatusOK, ServerTime: 1767225600, ValidUntil: 1798761600}
	inline, err := license.SignResponse(key, r)
	if err != nil {
		t.Fatal(err)
	}
	var e license.Envelope
	json.Unmarshal(inline, &e)
	both, _ := json.Marshal(license.Envelope{P: e.P, Payload: base64.StdEncoding.EncodeToString(e.P), Sig: e.Sig})
	spaced := bytes.Replace(inline, []byte(`"v":1,`), []byte(`"v": 1,`), 1)
	tests := []struct {
		name string
		raw  []byte
		want error
	}{
		{"inline", inline, nil},
		{"base64", legacyEnvelope(t, inline), nil},
		{"both", both, license.ErrMalformed},
		{"neither", []byte(`{"sig":"` + e.Sig + `"}`), license.ErrMalformed},
		{"inline re-spaced", spaced, license.ErrBadSignature},
	}
	for _, tt := range tests {
		got, err := license.ParseResponse(tt.raw, pub)
		if !errors.Is(err, tt.want) || (err == nil && got.Serial != "EPX-1") {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if len(inline) >= len(legacyEnvelope(t, inline)) {
		t.Errorf("inline envelope %d bytes, base64 %d", len(inline), len(legacyEnvelope(t, inline)))
	}
}
