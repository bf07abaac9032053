package logs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Remote syslog settings live in bucket logs.syslog, key "settings".
const (
	SyslogBucket = "logs.syslog"
	settingsKey  = "settings"
)

// Transports of the remote syslog sender.
const (
	TransportTLS = "tls" // RFC 5425, certificate and server name verified
	TransportTCP = "tcp" // RFC 6587 octet counting, unencrypted
	TransportUDP = "udp" // RFC 5426, unencrypted
)

// FacilityAuto maps each message's facility from its kind: authpriv for
// security events, "log audit" for audit entries.
const FacilityAuto = "auto"

// facilities are the RFC 5424 facility codes an admin may pick.
var facilities = map[string]int{
	"kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5, "authpriv": 10,
	"audit": 13, "alert": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19,
	"local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// Facilities lists the accepted facility names, FacilityAuto first (UI).
func Facilities() []string {
	out := []string{FacilityAuto}
	names := make([]string, 0, len(facilities))
	for n := range facilities {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return facilities[a] - facilities[b] })
	return append(out, names...)
}

// Bounds of the settings (untrusted admin input).
const (
	MaxSyslogSettingsBytes = 96 << 10
	maxCAPEM               = 64 << 10
	maxAddress             = 261 // 253-byte host name, colon, port
)

// SyslogSettings configure the remote syslog sender.
type SyslogSettings struct {
	Enabled   bool   `json:"enabled"`
	Address   string `json:"address"`   // host:port of the collector
	Transport string `json:"transport"` // tls, tcp or udp
	// CAPEM, if set, is the only trust anchor for the collector's
	// certificate (TLS); empty: the system roots.
	CAPEM    string `json:"ca_pem,omitempty"`
	Facility string `json:"facility"` // auto or a facility name
}

// ErrSyslogSettings marks settings refused by validation.
var ErrSyslogSettings = errors.New("invalid syslog settings")

// DefaultSyslogSettings are off, TLS, facility mapped per kind.
func DefaultSyslogSettings() SyslogSettings {
	return SyslogSettings{Transport: TransportTLS, Facility: FacilityAuto}
}

// Unencrypted says the messages would cross the network in clear text.
func (s SyslogSettings) Unencrypted() bool { return s.Transport != TransportTLS }

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrSyslogSettings, fmt.Sprintf(format, a...))
}

// Validate checks every field; the error names the first bad one.
func (s SyslogSettings) Validate() error {
	switch s.Transport {
	case TransportTLS, TransportTCP, TransportUDP:
	default:
		return bad("transport must be tls, tcp or udp")
	}
	if _, ok := facilities[s.Facility]; !ok && s.Facility != FacilityAuto {
		return bad("facility %q is not one of %s", clip(s.Facility), strings.Join(Facilities(), ", "))
	}
	if s.Address != "" || s.Enabled {
		if _, _, err := splitAddress(s.Address); err != nil {
			return err
		}
	}
	if s.CAPEM != "" {
		if s.Transport != TransportTLS {
			return bad("ca_pem is only used with transport tls")
		}
		if _, err := caPool(s.CAPEM); err != nil {
			return err
		}
	}
	return nil
}

// splitAddress checks host:port: a host name or IP literal and a port 1..65535.
func splitAddress(a string) (string, int, error) {
	if a == "" {
		return "", 0, bad("address (host:port) is required when enabled")
	}
	if len(a) > maxAddress {
		return "", 0, bad("address longer than %d bytes", maxAddress)
	}
	host, ps, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, bad("address must be host:port")
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 || ps[0] == '0' || ps[0] == '+' {
		return "", 0, bad("port must be 1 to 65535")
	}
	if net.ParseIP(host) == nil && !validHostName(host) {
		return "", 0, bad("host must be a DNS name or an IP address")
	}
	return host, port, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// caPool parses the admin's CA bundle: certificates only (a private key in
// it is refused, so none is ever stored or audited), at least one.
func caPool(p string) (*x509.CertPool, error) {
	if len(p) > maxCAPEM {
		return nil, bad("ca_pem larger than %d bytes", maxCAPEM)
	}
	pool := x509.NewCertPool()
	rest, n := []byte(p), 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, bad("ca_pem may hold only CERTIFICATE blocks, found %q", clip(b.Type))
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, bad("ca_pem certificate %d: %v", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 || len(bytes.TrimSpace(rest)) != 0 {
		return nil, bad("ca_pem must be PEM certificates and nothing else")
	}
	return pool, nil
}

// DecodeSyslogSettings reads settings from an admin request body: bounded,
// strict JSON (unknown fields refused), defaults for absent fields, validated.
func DecodeSyslogSettings(r io.Reader) (SyslogSettings, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSyslogSettingsBytes+1))
	if err != nil {
		return SyslogSettings{}, fmt.Errorf("read syslog settings: %w", err)
	}
	if len(data) > MaxSyslogSettingsBytes {
		return SyslogSettings{}, bad("body larger than %d bytes", MaxSyslogSettingsBytes)
	}
	s := DefaultSyslogSettings()
	if err := strictjson.Unmarshal(data, &s); err != nil {
		return SyslogSettings{}, bad("JSON: %v", err)
	}
	if err := s.Validate(); err != nil {
		return SyslogSettings{}, err
	}
	return s, nil
}

// LoadSyslogSettings returns the stored settings, or the defaults.
func LoadSyslogSettings(db *store.DB) (SyslogSettings, error) {
	s := DefaultSyslogSettings()
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(SyslogBucket, settingsKey, &s)
		return err
	})
	if err != nil {
		return SyslogSettings{}, fmt.Errorf("logs: read %s: %w", SyslogBucket, err)
	}
	return s, nil
}

// SaveSyslogSettingsTx validates s and stores it inside tx (so the audit
// entry commits with it); it returns the settings it replaces.
func SaveSyslogSettingsTx(tx *store.Tx, s SyslogSettings) (SyslogSettings, error) {
	if err := s.Validate(); err != nil {
		return SyslogSettings{}, err
	}
	prev := DefaultSyslogSettings()
	if _, err := tx.Get(SyslogBucket, settingsKey, &prev); err != nil {
		return SyslogSettings{}, fmt.Errorf("logs: read %s: %w", SyslogBucket, err)
	}
	if err := tx.Put(SyslogBucket, settingsKey, s); err != nil {
		return SyslogSettings{}, fmt.Errorf("logs: write %s: %w", SyslogBucket, err)
	}
	return prev, nil
}
