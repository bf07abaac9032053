package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func bootstrapJSON(mod func(m map[string]any)) []byte {
	m := map[string]any{
		"device_key": base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		"setup_code": "AB12-CD34-EF56",
		"serial":     "EPX-0001",
		"install_id": "0123456789abcdef",
	}
	if mod != nil {
		mod(m)
	}
	b, _ := json.Marshal(m)
	return b
}

func TestParseBootstrap(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		wantErr string // "" = valid
	}{
		{"valid", bootstrapJSON(nil), ""},
		{"valid with trailing newline", append(bootstrapJSON(nil), '\n'), ""},
		{"too big", append(bootstrapJSON(nil), bytes.Repeat([]byte(" "), maxBootstrap)...), "more than 4096 bytes"},
		{"malformed", []byte(`{"device_key":`), "malformed JSON"},
		{"not an object", []byte(`[1,2]`), "malformed JSON"},
		{"empty", nil, "malformed JSON"},
		{"trailing object", append(bootstrapJSON(nil), bootstrapJSON(nil)...), "trailing data"},
		{"unknown field", bootstrapJSON(func(m map[string]any) { m["password"] = "x" }), "unknown field"},
		{"missing key", bootstrapJSON(func(m map[string]any) { delete(m, "device_key") }), "device_key must be 32 bytes"},
		{"short key", bootstrapJSON(func(m map[string]any) { m["device_key"] = base64.StdEncoding.EncodeToString(make([]byte, 16)) }), "device_key must be 32 bytes"},
		{"key not base64", bootstrapJSON(func(m map[string]any) { m["device_key"] = "!!!" }), "malformed JSON"},
		{"missing setup code", bootstrapJSON(func(m map[string]any) { delete(m, "setup_code") }), "setup_code"},
		{"lower-case setup code", bootstrapJSON(func(m map[string]any) { m["setup_code"] = "ab12-cd34-ef56" }), "setup_code"},
		{"setup code with newline", bootstrapJSON(func(m map[string]any) { m["setup_code"] = "AB12-CD34-EF56\n" }), "setup_code"},
		{"missing serial", bootstrapJSON(func(m map[string]any) { delete(m, "serial") }), "serial"},
		{"serial with dots", bootstrapJSON(func(m map[string]any) { m["serial"] = "../etc" }), "serial"},
		{"serial too long", bootstrapJSON(func(m map[string]any) { m["serial"] = strings.Repeat("A", 49) }), "serial"},
		{"missing install id", bootstrapJSON(func(m map[string]any) { delete(m, "install_id") }), "install_id"},
		{"with PID 1's data keys", bootstrapJSON(func(m map[string]any) {
			m["media_key"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
			m["backup_key"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
			m["key_protection"], m["floors_in_tpm"] = "tpm", true
		}), ""},
		{"short media key", bootstrapJSON(func(m map[string]any) { m["media_key"] = base64.StdEncoding.EncodeToString(make([]byte, 8)) }), "media_key must be 32 bytes"},
		{"short backup key", bootstrapJSON(func(m map[string]any) { m["backup_key"] = base64.StdEncoding.EncodeToString(make([]byte, 33)) }), "backup_key must be 32 bytes"},
		{"unknown protection", bootstrapJSON(func(m map[string]any) { m["key_protection"] = "rot13" }), "key_protection"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := parseBootstrap(bytes.NewReader(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseBootstrap: %v", err)
				}
				if len(b.DeviceKey) != 32 || b.Serial != "EPX-0001" || b.SetupCode != "AB12-CD34-EF56" {
					t.Fatalf("parsed %+v", b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "bootstrap: ") {
				t.Fatalf("error %q does not say it is about the bootstrap", err)
			}
		})
	}
}

func FuzzParseBootstrap(f *testing.F) {
	f.Add(bootstrapJSON(nil))
	f.Add([]byte(`{"device_key":"","setup_code":"","serial":"","install_id":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		b, err := parseBootstrap(bytes.NewReader(in))
		if err != nil {
			return
		}
		if err := b.validate(); err != nil || len(in) > maxBootstrap {
			t.Fatalf("accepted invalid bootstrap %q: %v", in, err)
		}
	})
}

func TestSetupCode(t *testing.T) {
	re := regexp.MustCompile(`^[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}$`)
	seen := map[string]bool{}
	for range 200 {
		c, err := newSetupCode()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(c) || !setupCodeRE.MatchString(c) {
			t.Fatalf("setup code %q has the wrong form", c)
		}
		if seen[c] {
			t.Fatalf("setup code %q repeated", c)
		}
		seen[c] = true
	}
}

func TestDevIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	a, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "identity.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity.json mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "identity.json"))
	if bytes.Contains(raw, []byte(a.SetupCode)) {
		t.Fatal("the per-start setup code was persisted")
	}
	b, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.DeviceKey, b.DeviceKey) || a.Serial != b.Serial || a.InstallID != b.InstallID {
		t.Fatal("second start made a new identity")
	}
	if a.SetupCode == b.SetupCode {
		t.Fatal("setup code did not change between starts")
	}
	// A damaged identity file is an error, never silently replaced.
	os.WriteFile(filepath.Join(dir, "identity.json"), []byte(`{"device_key":"AAAA"}`), 0o600)
	if _, err := devIdentity(dir); err == nil || !strings.Contains(err.Error(), "device_key") {
		t.Fatalf("damaged identity: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		wantErr   string
		wantHTTPS string
		wantCtl   string
	}{
		{"production defaults", nil, "", ":443", "/run/edgepbx/init.sock"},
		{"dev defaults", []string{"--dev", "/tmp/x"}, "", "127.0.0.1:8443", ""},
		{"dev ipv6 loopback", []string{"--dev", "/tmp/x", "--https", "[::1]:9443"}, "", "[::1]:9443", ""},
		{"dev with control", []string{"--dev", "/tmp/x", "--control", "/tmp/s"}, "", "127.0.0.1:8443", "/tmp/s"},
		{"dev on all addresses", []string{"--dev", "/tmp/x", "--https", ":8443"}, "not a loopback address", "", ""},
		{"dev sip public", []string{"--dev", "/tmp/x", "--sip", "192.0.2.1:5060"}, "not a loopback address", "", ""},
		{"dev sip-tls public", []string{"--dev", "/tmp/x", "--sip-tls", ":5061"}, "not a loopback address", "", ""},
		{"dev sip-tls off", []string{"--dev", "/tmp/x", "--sip-tls", ""}, "", "127.0.0.1:8443", ""},
		{"bad sip-tls", []string{"--sip-tls", "5061"}, "missing port", "", ""},
		{"licence url", []string{"--license-url", "https://lic.example:8443", "--license-id", "LIC-1", "--license-ca", "/ca.pem"}, "", ":443", "/run/edgepbx/init.sock"},
		{"licence url plain http", []string{"--license-url", "http://lic.example"}, "want https://host", "", ""},
		{"licence url with path", []string{"--license-url", "https://lic.example/v1"}, "want https://host", "", ""},
		{"licence url with user", []string{"--license-url", "https://u:p@lic.example"}, "want https://host", "", ""},
		{"licence id without url", []string{"--license-id", "LIC-1"}, "need --license-url", "", ""},
		{"licence proxy bad", []string{"--license-url", "https://lic.example", "--license-proxy", "socks5://u:secret@p:1080"}, "want http://", "", ""},
		{"bad address", []string{"--https", "443"}, "missing port", "", ""},
		{"extra argument", []string{"serve"}, "unexpected arguments", "", ""},
		{"unknown flag", []string{"--root"}, "flag provided but not defined", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseFlags(tc.args, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatal("an error echoed proxy credentials")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.httpsAddr != tc.wantHTTPS || c.controlPath != tc.wantCtl {
				t.Fatalf("https %q control %q", c.httpsAddr, c.controlPath)
			}

		})
	}
}
