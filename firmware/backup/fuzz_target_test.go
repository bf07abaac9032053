package backup

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// targetBody is the admin API's target request (firmware/admin
// BackupTargetRequest, less the re-authentication proof).
type targetBody struct {
	TargetConfig
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
}

// FuzzTargetSettings: a target body from the network is decoded strictly
// and validated; whatever passes has a host without scheme or path, no
// ".." segment and survives a round trip unchanged, and nothing panics.
func FuzzTargetSettings(f *testing.F) {
	f.Add("sftp", `{"enabled":true,"host":"backup.example.com","port":22,"path":"/srv/b","user":"pbx","password":"pw",`+
		`"host_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}`)
	f.Add("s3", `{"enabled":true,"host":"s3.example.com","port":443,"bucket":"pbx-backups","prefix":"a/b","region":"eu-west-1","user":"AK","password":"s"}`)
	f.Add("s3", `{"host":"::1","bucket":"b..c","ca_cert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","user":"x"}`)
	f.Add("sftp", `{"host":"h","path":"../..","user":"u","private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\n"}`)
	f.Fuzz(func(t *testing.T, kind, body string) {
		var b targetBody
		if err := strictjson.Unmarshal([]byte(body), &b); err != nil {
			return
		}
		if err := ValidateTarget(kind, b.TargetConfig, TargetSecrets{Password: b.Password, PrivateKey: b.PrivateKey}); err != nil {
			return
		}
		c := b.TargetConfig
		// Only an IP address may hold a colon; nothing may hold a scheme,
		// a path, credentials or spaces.
		if net.ParseIP(c.Host) == nil && strings.ContainsAny(c.Host, "/:@ %") || strings.ContainsAny(c.Host, "/@ ") {
			t.Fatalf("host %q accepted", c.Host)
		}
		for _, seg := range strings.Split(c.Path+"/"+c.Prefix, "/") {
			if seg == ".." {
				t.Fatalf("path %q prefix %q accepted", c.Path, c.Prefix)
			}
		}
		_ = where(target{kind: kind, cfg: c})
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back TargetConfig
		if err := strictjson.Unmarshal(raw, &back); err != nil || back != c {
			t.Fatalf("round trip: %v %+v %+v", err, back, c)
		}
		if err := ValidateTarget(kind, back, TargetSecrets{Password: b.Password, PrivateKey: b.PrivateKey}); err != nil {
			t.Fatalf("valid once, refused after a round trip: %v", err)
		}
	})
}
