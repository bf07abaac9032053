package license_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/license"
)

func TestParsePublicKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	line := license.FormatPublicKey(pub)
	tests := []struct {
		name, text string
		ok         bool
	}{
		{"one line", line, true},
		{"comments", "# vendor key\n\n" + line + "\n", true},
		{"empty", "# nothing\n", false},
		{"two keys", line + "\n" + line, false},
		{"no prefix", strings.TrimPrefix(line, "ed25519:"), false},
		{"short", "ed25519:AAAA", false},
		{"not base64", "ed25519:!!!", false},
	}
	for _, tt := range tests {
		k, err := license.ParsePublicKey(tt.text)
		if (err == nil) != tt.ok || (tt.ok && !k.Equal(pub)) {
			t.Errorf("%s: key %x err %v", tt.name, k, err)
		}
	}
	if _, err := license.ParsePublicKey(""); !errors.Is(err, license.ErrNoVendorKey) {
		t.Errorf("empty: %v", err)
	}
}

// TestBuildVendorKey builds a program with the key injected by -ldflags -X,
// as release builds do, and checks it is the key the image uses. The
// embedded default (vendorkey.pub in the tree) holds no key.
func TestBuildVendorKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	want := license.FormatPublicKey(pub)
	out, err := exec.Command("go", "run", "-ldflags",
		"-X github.com/edgepbx/edgepbx/firmware/license.buildVendorKey="+want, "./testdata/keyprobe").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Fatalf("with -ldflags: %v %q, want %q", err, out, want)
	}
	out, err = exec.Command("go", "run", "./testdata/keyprobe").CombinedOutput()
	if err == nil || !strings.Contains(string(out), license.ErrNoVendorKey.Error()) {
		t.Fatalf("without a key: %v %q", err, out)
	}
}
