package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/image"
)

// The image builder writes what PID 1 reads: same paths, same format.
func TestLicenseContractWithImage(t *testing.T) {
	if licensePath != "/"+image.LicensePath {
		t.Fatalf("PID 1 reads %s, the image builder writes /%s", licensePath, image.LicensePath)
	}
	data, err := json.Marshal(image.LicenseConfig{URL: "https://licence.example.com:8443", CAFile: "/" + image.LicenseCAPath})
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseLicenseConfig(data)
	if err != nil {
		t.Fatalf("PID 1 rejects the builder's licence file %s: %v", data, err)
	}
	if c.URL != "https://licence.example.com:8443" || c.CAFile != "/"+image.LicenseCAPath {
		t.Errorf("parsed %+v", c)
	}
}

func TestParseLicenseConfig(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"good", `{"url":"https://10.0.2.100","ca_file":"/etc/edgepbx/license-ca.pem"}`, true},
		{"good port", `{"url":"https://lic.example:8443","ca_file":"/etc/edgepbx/ca.pem"}`, true},
		{"http", `{"url":"http://lic.example","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"user info", `{"url":"https://u:p@lic.example","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"path", `{"url":"https://lic.example/v1","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"trailing slash", `{"url":"https://lic.example/","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"query", `{"url":"https://lic.example?x=1","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"empty query", `{"url":"https://lic.example?","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"fragment", `{"url":"https://lic.example#x","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"no host", `{"url":"https:///","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"port only", `{"url":"https://:443","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"space", `{"url":"https://lic.example --x","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"newline", `{"url":"https://lic.example\n","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"long url", `{"url":"https://` + strings.Repeat("a", 600) + `","ca_file":"/etc/edgepbx/ca.pem"}`, false},
		{"ca on data", `{"url":"https://lic.example","ca_file":"/data/ca.pem"}`, false},
		{"ca escapes", `{"url":"https://lic.example","ca_file":"/etc/edgepbx/../../data/ca.pem"}`, false},
		{"ca relative", `{"url":"https://lic.example","ca_file":"etc/edgepbx/ca.pem"}`, false},
		{"ca missing", `{"url":"https://lic.example"}`, false},
		{"unknown field", `{"url":"https://lic.example","ca_file":"/etc/edgepbx/ca.pem","proxy":"x"}`, false},
		{"trailing object", `{"url":"https://lic.example","ca_file":"/etc/edgepbx/ca.pem"}{}`, false},
		{"not json", `url=https://lic.example`, false},
		{"oversize", `{"url":"https://lic.example","ca_file":"/etc/edgepbx/ca.pem"}` + strings.Repeat(" ", maxLicenseFile), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseLicenseConfig([]byte(tt.in))
			if (err == nil) != tt.ok {
				t.Errorf("parseLicenseConfig(%.80q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestLicenseArgs(t *testing.T) {
	write := func(t *testing.T, root, rel, data string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const cfg = `{"url":"https://10.0.2.100","ca_file":"/etc/edgepbx/license-ca.pem"}`

	t.Run("no file: no flags", func(t *testing.T) {
		args, err := licenseArgs(t.TempDir())
		if err != nil || args != nil {
			t.Errorf("args %q err %v, want none", args, err)
		}
	})
	t.Run("file and CA", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, licensePath, cfg)
		write(t, root, "/etc/edgepbx/license-ca.pem", "pem")
		args, err := licenseArgs(root)
		want := []string{"--license-url", "https://10.0.2.100", "--license-ca", "/etc/edgepbx/license-ca.pem"}
		if err != nil || !slices.Equal(args, want) {
			t.Errorf("args %q err %v, want %q", args, err, want)
		}
	})
	t.Run("CA missing", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, licensePath, cfg)
		if args, err := licenseArgs(root); err == nil {
			t.Errorf("args %q without the CA file", args)
		}
	})
	t.Run("CA is a directory", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, licensePath, cfg)
		if err := os.MkdirAll(filepath.Join(root, "/etc/edgepbx/license-ca.pem"), 0o755); err != nil {
			t.Fatal(err)
		}
		if args, err := licenseArgs(root); err == nil {
			t.Errorf("args %q with a directory as CA", args)
		}
	})
	t.Run("CA is a symlink", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, licensePath, cfg)
		write(t, root, "/data/ca.pem", "pem")
		if err := os.Symlink(filepath.Join(root, "/data/ca.pem"), filepath.Join(root, "/etc/edgepbx/license-ca.pem")); err != nil {
			t.Fatal(err)
		}
		if args, err := licenseArgs(root); err == nil {
			t.Errorf("args %q with a symlinked CA", args)
		}
	})
	t.Run("bad file", func(t *testing.T) {
		root := t.TempDir()
		write(t, root, licensePath, `{"url":"http://x"}`)
		write(t, root, "/etc/edgepbx/license-ca.pem", "pem")
		if args, err := licenseArgs(root); err == nil {
			t.Errorf("args %q from a bad file", args)
		}
	})
}

// FuzzParseLicenseConfig: whatever the file holds, PID 1 either rejects it
// or hands edgepbxd an https URL without spaces and a CA path in the image.
func FuzzParseLicenseConfig(f *testing.F) {
	f.Add([]byte(`{"url":"https://10.0.2.100","ca_file":"/etc/edgepbx/license-ca.pem"}`))
	f.Add([]byte(`{"url":"https://lic.example:8443/","ca_file":"/etc/edgepbx/../x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseLicenseConfig(data)
		if err != nil {
			return
		}
		if !strings.HasPrefix(c.URL, "https://") || strings.ContainsAny(c.URL, " \t\r\n") || len(c.URL) > maxLicenseURL {
			t.Fatalf("accepted url %q", c.URL)
		}
		if !strings.HasPrefix(c.CAFile, licenseCADir) || filepath.Clean(c.CAFile) != c.CAFile {
			t.Fatalf("accepted ca_file %q", c.CAFile)
		}
	})
}
