package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// licensePath is written by the image builder (image.WithLicense) when the
// vendor built the image to phone home; its format is image.LicenseConfig.
const licensePath = "/etc/edgepbx/license.json"

// Bounds on the licence configuration (the builder enforces the same).
const (
	maxLicenseFile = 4 << 10
	maxLicenseURL  = 512
	licenseCADir   = "/etc/edgepbx/"
)

// licenseConfig is /etc/edgepbx/license.json.
type licenseConfig struct {
	URL    string `json:"url"`
	CAFile string `json:"ca_file"`
}

// licenseArgs returns edgepbxd's licence flags from the image's licence
// file: none when the image has none. root prefixes every path (tests).
func licenseArgs(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, licensePath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("licence config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxLicenseFile+1))
	if err != nil {
		return nil, fmt.Errorf("licence config: %w", err)
	}
	c, err := parseLicenseConfig(data)
	if err != nil {
		return nil, err
	}
	// The CA file must be a regular file in the image, not something that
	// vanished or turned into a device since the build.
	st, err := os.Lstat(filepath.Join(root, c.CAFile))
	if err != nil {
		return nil, fmt.Errorf("licence CA: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("licence CA %s is not a regular file", c.CAFile)
	}
	return []string{"--license-url", c.URL, "--license-ca", c.CAFile}, nil
}

// parseLicenseConfig decodes and validates license.json: one object, no
// unknown fields, an https://host[:port] URL and a CA file under
// /etc/edgepbx/ (the image, never /data).
func parseLicenseConfig(data []byte) (licenseConfig, error) {
	var c licenseConfig
	if len(data) > maxLicenseFile {
		return c, fmt.Errorf("licence config larger than %d bytes", maxLicenseFile)
	}
	if err := strictjson.Unmarshal(data, &c); err != nil {
		return licenseConfig{}, fmt.Errorf("licence config: %w", err)
	}
	if err := checkLicenseURL(c.URL); err != nil {
		return licenseConfig{}, err
	}
	if !strings.HasPrefix(c.CAFile, licenseCADir) || filepath.Clean(c.CAFile) != c.CAFile ||
		len(c.CAFile) > 256 || strings.ContainsFunc(c.CAFile, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return licenseConfig{}, fmt.Errorf("licence config: ca_file %q must be a clean path under %s", c.CAFile, licenseCADir)
	}
	return c, nil
}

func checkLicenseURL(s string) error {
	if len(s) > maxLicenseURL || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return errors.New("licence config: url too long or with spaces or control characters")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.User != nil || u.Path != "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("licence config: url %q: want https://host[:port]", s)
	}
	return nil
}
