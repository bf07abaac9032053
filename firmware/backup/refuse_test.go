package backup

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"
)

type rec struct{ bucket, key, val string }

// reencode decrypts a real backup, lets mutate change it, and writes it
// again with consistent hashes, encrypted to the same key: a well-formed
// file whose content is what a test needs.
func reencode(t *testing.T, path, identity string, mutate func(m *Manifest, recs []rec) []rec) string {
	t.Helper()
	id, err := age.ParseX25519Identity(identity)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, id)
	if err != nil {
		t.Fatal(err)
	}
	var recs []rec
	m, err := Parse(r, DefaultLimits(), func(b, k string, v []byte) error {
		recs = append(recs, rec{b, k, string(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	recs = mutate(m, recs)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].bucket < recs[j].bucket })
	hashes := map[string]*bucketHash{}
	var order []string
	for _, x := range recs {
		if hashes[x.bucket] == nil {
			hashes[x.bucket] = newBucketHash(x.bucket)
			order = append(order, x.bucket)
		}
		hashes[x.bucket].add([]byte(x.key), []byte(x.val))
	}
	m.Buckets = nil
	for _, b := range order {
		m.Buckets = append(m.Buckets, hashes[b].info())
	}
	var out bytes.Buffer
	w, err := age.Encrypt(&out, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	if err := writeHeader(w, m); err != nil {
		t.Fatal(err)
	}
	for _, x := range recs {
		w.Write(frame([]byte(x.key), []byte(x.val)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "mutated.age")
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRestoreRefusals(t *testing.T) {
	a := newBox(t, "SRCBOX1")
	a.fill(t, 20)
	idA, _, err := a.backup.GenerateKey(Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	good := makeBackup(t, a, Encryption{})
	a.clk.t = a.clk.t.Add(1e9) // next file name
	pass := makeBackup(t, a, Encryption{Passphrase: "correct horse battery"})
	otherID, _ := age.GenerateX25519Identity()

	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup of %d bytes", len(raw))
	tmp := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flip := func(off int) string {
		b := bytes.Clone(raw)
		b[off] ^= 0x01
		return write(fmt.Sprintf("flip%d", off), b)
	}

	dst := newBox(t, "DSTBOX2")
	dst.fill(t, 3)
	small := DefaultLimits()
	small.MaxFileBytes = int64(len(raw) - 1)
	fewKeys := DefaultLimits()
	fewKeys.MaxKeys = 5

	for _, tc := range []struct {
		name string
		path string
		dec  Decryption
		lim  *Limits
		want error
		msg  string
	}{
		{"byte flipped in the data", flip(len(raw) - 100), Decryption{Identity: idA}, nil, ErrCorrupt, "content does not match"},
		{"byte flipped in the header", flip(40), Decryption{Identity: idA}, nil, nil, ""},
		{"truncated", write("trunc", raw[:len(raw)-10]), Decryption{Identity: idA}, nil, ErrCorrupt, ""},
		{"wrong key", good, Decryption{Identity: otherID.String()}, nil, ErrWrongKey, "wrong key or passphrase"},
		{"wrong passphrase", pass, Decryption{Passphrase: "incorrect horse battery"}, nil, ErrWrongKey, "wrong key or passphrase"},
		{"key for a passphrase backup", pass, Decryption{Identity: idA}, nil, ErrWrongKey, ""},
		{"not a key", good, Decryption{Identity: "AGE-SECRET-KEY-1NOPE"}, nil, ErrBadRequest, "AGE-SECRET-KEY"},
		{"no key", good, Decryption{}, nil, ErrBadRequest, "a key or a passphrase"},
		{"file over the size limit", good, Decryption{Identity: idA}, &small, ErrTooLarge, "max"},
		{"bucket over the key limit", good, Decryption{Identity: idA}, &fewKeys, ErrTooLarge, "keys (max 5)"},
		{"newer schema", reencode(t, good, idA, func(m *Manifest, r []rec) []rec { m.Schema = 99; return r }),
			Decryption{Identity: idA}, nil, ErrSchema, "update the firmware"},
		{"newer format", reencode(t, good, idA, func(m *Manifest, r []rec) []rec { m.Format = FormatMusic + 1; return r }),
			Decryption{Identity: idA}, nil, ErrFormat, "format version 4"},
		{"media in a format 1 backup", reencode(t, good, idA, func(m *Manifest, r []rec) []rec {
			m.Media = []MediaInfo{{ID: "call/1-0123456789abcdef.rec", Category: "call", Codec: "PCMA", SampleRate: 8000,
				Created: m.Created, SHA256: strings.Repeat("0", 64)}}
			return r
		}), Decryption{Identity: idA}, nil, ErrFormat, "format version 1 with media"},
		{"licence state smuggled in", reencode(t, good, idA, func(m *Manifest, r []rec) []rec {
			return append([]rec{{"license.state", "state", `"forged"`}}, r...)
		}), Decryption{Identity: idA}, nil, ErrBoxLocal, "license.state"},
		{"undecodable sealed record", reencode(t, good, idA, func(m *Manifest, r []rec) []rec {
			for i := range r {
				if r[i].bucket == "sip.extensions" {
					r[i].val = `{"user":"nobody"}`
				}
			}
			return r
		}), Decryption{Identity: idA}, nil, ErrFormat, "sip.extensions"},
		{"value not JSON", reencode(t, good, idA, func(m *Manifest, r []rec) []rec {
			return append(r, rec{"zz.extra", "k", "\x00not json"})
		}), Decryption{Identity: idA}, nil, ErrFormat, "not JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := dst.backup
			if tc.lim != nil {
				svc = dst.service(t, *tc.lim)
			}
			before := dump(t, dst.db)
			_, err := svc.Restore(tc.path, tc.dec, Actor{Name: "root1"})
			if err == nil {
				t.Fatal("restore accepted")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			after := dump(t, dst.db)
			// Only the audit entry of the refusal may be new.
			for k, v := range before {
				if after[k] != v && k != "audit.meta/head" {
					t.Fatalf("%s changed by a refused restore", k)
				}
			}
			for k := range after {
				if _, ok := before[k]; !ok && !strings.HasPrefix(k, "audit.log/") {
					t.Fatalf("%s added by a refused restore", k)
				}
			}
			es, err := dst.audit.After(0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if last := es[len(es)-1]; last.Action != "backup.restore" || last.Outcome == "ok" {
				t.Fatalf("refusal not audited: %+v", last)
			}
			if _, err := dst.audit.VerifyFull(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNoPlaintextOnDisk scans every file under both boxes' data
// directories (store and backup files) for the secrets they hold.
func TestNoPlaintextOnDisk(t *testing.T) {
	a := newBox(t, "SRCBOX1")
	secret := a.fill(t, 5)
	idA, _, err := a.backup.GenerateKey(Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	path := makeBackup(t, a, Encryption{})
	a.clk.t = a.clk.t.Add(1e9)
	makeBackup(t, a, Encryption{Passphrase: "correct horse battery"})
	dst := newBox(t, "DSTBOX2")
	if _, err := dst.backup.Restore(path, Decryption{Identity: idA}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dst.backup.GenerateKey(Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	makeBackup(t, dst, Encryption{})
	a.db.Close()
	dst.db.Close()
	needles := []string{rootPW, opsPW, extPW + "101", trunkPW, telTrunk, secret, idA,
		md5hex("101:" + realm + ":" + extPW + "101")}
	for _, dir := range []string{a.dir, dst.dir} {
		files := 0
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for _, n := range needles {
				if bytes.Contains(b, []byte(n)) {
					t.Errorf("%s holds the secret %.6s… in clear", p, n)
				}
			}
			return nil
		})
		if files < 2 {
			t.Fatalf("scanned only %d files in %s", files, dir)
		}
	}
}
