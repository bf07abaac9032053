package logs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

func TestDecodeSyslogSettings(t *testing.T) {
	ca := newTestCA(t)
	keyInCA := ca.caPEM + ca.keyPEM
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"defaults", `{}`, true},
		{"tls with CA", `{"enabled":true,"address":"logs.example.net:6514","transport":"tls","ca_pem":` + jsonString(ca.caPEM) + `}`, true},
		{"udp legacy", `{"enabled":true,"address":"[2001:db8::1]:514","transport":"udp","facility":"local4"}`, true},
		{"disabled without address", `{"enabled":false,"transport":"tcp"}`, true},
		{"enabled without address", `{"enabled":true}`, false},
		{"no port", `{"enabled":true,"address":"logs.example.net"}`, false},
		{"port 0", `{"enabled":true,"address":"h:0"}`, false},
		{"port too big", `{"enabled":true,"address":"h:65536"}`, false},
		{"leading zero port", `{"enabled":true,"address":"h:0514"}`, false},
		{"bad host", `{"enabled":true,"address":"a b:514"}`, false},
		{"host with underscore", `{"enabled":true,"address":"a_b:514"}`, false},
		{"long address", `{"enabled":true,"address":"` + strings.Repeat("a", 300) + `:514"}`, false},
		{"unknown transport", `{"transport":"dtls"}`, false},
		{"unknown facility", `{"facility":"mail"}`, false},
		{"unknown field", `{"password":"x"}`, false},
		{"trailing data", `{} {}`, false},
		{"CA not PEM", `{"ca_pem":"hello"}`, false},
		{"private key in CA", `{"ca_pem":` + jsonString(keyInCA) + `}`, false},
		{"CA with tcp", `{"transport":"tcp","ca_pem":` + jsonString(ca.caPEM) + `}`, false},
		{"huge CA", `{"ca_pem":"` + strings.Repeat("A", 70<<10) + `"}`, false},
		{"huge body", `{"address":"` + strings.Repeat("A", 100<<10) + `"}`, false},
		{"not JSON", `[`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := DecodeSyslogSettings(strings.NewReader(c.body))
			if c.ok != (err == nil) {
				t.Fatalf("got %+v, %v; want ok=%v", s, err, c.ok)
			}
			if err != nil && !errors.Is(err, ErrSyslogSettings) {
				t.Errorf("error %v is not ErrSyslogSettings", err)
			}
		})
	}
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer("\n", `\n`, `"`, `\"`).Replace(s) + `"`
}

func TestSyslogSettingsStore(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := LoadSyslogSettings(db)
	if err != nil || got != DefaultSyslogSettings() {
		t.Fatalf("empty store: %+v %v", got, err)
	}
	want := SyslogSettings{Enabled: true, Address: "192.0.2.1:6514", Transport: TransportTLS, Facility: "local0"}
	err = db.Update(func(tx *store.Tx) error {
		prev, err := SaveSyslogSettingsTx(tx, want)
		if prev != DefaultSyslogSettings() {
			t.Errorf("previous %+v", prev)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Invalid settings are refused and change nothing.
	err = db.Update(func(tx *store.Tx) error {
		_, err := SaveSyslogSettingsTx(tx, SyslogSettings{Enabled: true, Transport: "tls", Facility: "auto"})
		return err
	})
	if !errors.Is(err, ErrSyslogSettings) {
		t.Fatalf("invalid save: %v", err)
	}
	if got, err := LoadSyslogSettings(db); err != nil || got != want {
		t.Fatalf("stored %+v %v, want %+v", got, err, want)
	}
}

func FuzzDecodeSyslogSettings(f *testing.F) {
	f.Add([]byte(`{"enabled":true,"address":"logs.example.net:6514","transport":"tls","facility":"auto"}`))
	f.Add([]byte(`{"address":"[::1]:514","transport":"udp","facility":"local7"}`))
	f.Add([]byte(`{"ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}`))
	f.Add([]byte(`{"address":"a..b:1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSyslogSettings(strings.NewReader(string(data)))
		if err != nil {
			if s != (SyslogSettings{}) {
				t.Fatalf("refused settings returned values: %+v", s)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted settings do not validate: %v", err)
		}
		if len(s.Address) > maxAddress || len(s.CAPEM) > maxCAPEM {
			t.Fatalf("unbounded field accepted: %d %d", len(s.Address), len(s.CAPEM))
		}
		if s.Enabled || s.Address != "" {
			if _, err := NewSender(SenderConfig{}).tlsConfig(s); err != nil {
				t.Fatalf("accepted settings but no TLS config: %v", err)
			}
		}
	})
}
