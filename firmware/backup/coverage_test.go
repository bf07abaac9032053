package backup

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEverySealedValueHasAResealer: a value sealed with the device key
// that no Resealer moves would restore on another box as bytes that never
// open. Every file that seals must be known here, with the bucket whose
// Resealer (or box-local status) covers it; a new one fails this test
// until it is added to the composition root's resealers and to this list.
func TestEverySealedValueHasAResealer(t *testing.T) {
	covered := map[string]string{
		"auth/totp.go":           "auth.accounts",
		"sipedge/extensions.go":  "sip.extensions, sip.trunks",
		"certs/acme.go":          "certs.acme",
		"certs/install.go":       "certs",
		"pbxconfig/telephony.go": "config.telephony",
		"license/session.go":     "box-local: license.state",
		"license/manager.go":     "box-local: license.state",
		"provision/device.go":    "provision.secrets",
		"audit/prune.go":         "audit.meta",
		"privacy/anon.go":        "privacy.keys",
		"mailer/service.go":      "mail",
		"provision/service.go":   "in memory only: the dummy sealed for equal refusal timing",
		// Recordings are sealed under the media key, in files: a backup
		// with media carries them opened and a restore seals them again
		// under the target's media key (media.go).
		"mediaserver/recording/seal.go": "media option of backups",
	}
	seal := regexp.MustCompile(`\.(Seal|PutSecret)\(`)
	root := filepath.Join("..")
	seen := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(rel, "store/") || strings.HasPrefix(rel, "backup/") {
			return nil
		}
		src, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if seal.Match(src) {
			seen[rel] = true
			if _, ok := covered[rel]; !ok {
				t.Errorf("%s seals values with the device key but no backup Resealer covers it", rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f := range covered {
		if !seen[f] {
			t.Errorf("%s no longer seals anything: update this list", f)
		}
	}
	if len(resealers()) != 10 {
		t.Fatalf("the test's resealers (%d) differ from the buckets listed here", len(resealers()))
	}
}
