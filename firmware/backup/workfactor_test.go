package backup

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

// A passphrase backup costs 1 KiB × 2^workFactor of memory in edgepbxd:
// new ones are written with defaultWorkFactor, and a restore refuses a file
// that demands more than maxWorkFactor before spending that memory, with an
// answer that says why, and changes nothing.
func TestScryptWorkFactorBounded(t *testing.T) {
	const pass = "correct horse battery"
	a := newBox(t, "SRCBOX1")
	a.fill(t, 3)
	s, err := New(Config{DB: a.db, Audit: a.audit, Box: a.id, Dir: filepath.Join(a.dir, "wf"),
		Resealers: resealers(), BoxLocal: DefaultBoxLocal("", nil), Limits: DefaultLimits(), Now: a.clk.Now, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := s.Write(&out, Encryption{Passphrase: pass}); err != nil {
		t.Fatal(err)
	}
	if got := scryptFactor(t, out.Bytes()); got != defaultWorkFactor {
		t.Fatalf("written with work factor %d, want %d", got, defaultWorkFactor)
	}

	// The same content re-encrypted demanding 2^18 (256 MiB).
	id, err := age.NewScryptIdentity(pass)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := age.Decrypt(bytes.NewReader(out.Bytes()), id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.NewScryptRecipient(pass)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(maxWorkFactor + 1)
	var heavy bytes.Buffer
	w, err := age.Encrypt(&heavy, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "heavy.age")
	if err := os.WriteFile(path, heavy.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := newBox(t, "DSTBOX2")
	dst.fill(t, 2)
	before := dump(t, dst.db)
	_, err = dst.backup.Restore(path, Decryption{Passphrase: pass}, Actor{Name: "root1"})
	if err == nil || !strings.Contains(err.Error(), "work factor") {
		t.Fatalf("restore of a backup demanding 2^%d: %v", maxWorkFactor+1, err)
	}
	after := dump(t, dst.db)
	for k, v := range before { // only the refusal's audit entry may be new
		if after[k] != v && k != "audit.meta/head" {
			t.Fatalf("%s changed by a refused restore", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && !strings.HasPrefix(k, "audit.log/") {
			t.Fatalf("%s added by a refused restore", k)
		}
	}
}

// scryptFactor reads the work factor from an age scrypt stanza
// ("-> scrypt SALT N").
func scryptFactor(t *testing.T, file []byte) int {
	t.Helper()
	for _, line := range strings.Split(string(file[:min(len(file), 512)]), "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "->" && f[1] == "scrypt" {
			n := 0
			for _, c := range f[3] {
				n = n*10 + int(c-'0')
			}
			return n
		}
	}
	t.Fatal("no scrypt stanza")
	return 0
}
