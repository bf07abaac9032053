package backup

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/moh"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// musicBox is a box with a music-on-hold library under its data directory.
func musicBox(t *testing.T, serial string) (*box, *moh.Library) {
	t.Helper()
	b := newBox(t, serial)
	lib, err := moh.New(filepath.Join(b.dir, "moh"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{DB: b.db, Audit: b.audit, Box: b.id, Dir: filepath.Join(b.dir, "backups"),
		Resealers: resealers(), BoxLocal: DefaultBoxLocal(certs.Bucket, certs.BoxLocalKeys()),
		Now: b.clk.Now, Log: quiet(), ScryptWorkFactor: 10, Music: lib})
	if err != nil {
		t.Fatal(err)
	}
	b.backup = s
	return b, lib
}

// music is a WAV of secs seconds of hz at rate.
func music(rate int, secs float64, hz float64) []byte {
	pcm := make([]int16, int(float64(rate)*secs))
	for i := range pcm {
		pcm[i] = int16(9000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return wav.Encode(rate, pcm)
}

func upload(t *testing.T, lib *moh.Library, class string, file []byte) {
	t.Helper()
	if _, err := lib.Put(class, file); err != nil {
		t.Fatal(err)
	}
}

// libraryFiles is every uploaded class's stored file.
func libraryFiles(t *testing.T, lib *moh.Library) map[string][]byte {
	t.Helper()
	names, err := lib.Uploaded()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		if out[n], err = lib.File(n); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestMusicRoundTrip: the uploaded music-on-hold classes travel in the
// backup under its encryption (a class of 2.5 min spans two records) and
// come back byte for byte, on another box (whose own uploads are replaced
// or removed) and on the box that made it.
func TestMusicRoundTrip(t *testing.T) {
	src, srcLib := musicBox(t, "SRCMOH1")
	upload(t, srcLib, "jazz", music(8000, 5, 440))      // converted to 16 kHz on upload
	upload(t, srcLib, "jazz-2", music(16000, 150, 330)) // 4.8 MB: two parts
	upload(t, srcLib, moh.DefaultClass, music(16000, 2, 550))
	want := libraryFiles(t, srcLib)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := makeBackup(t, src, Encryption{Recipient: id.Recipient().String()})
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for c, f := range want {
		if bytes.Contains(raw, f[100:164]) {
			t.Fatalf("class %s readable in the backup file", c)
		}
	}
	m, err := src.backup.Inspect(path, Decryption{Identity: id.String()})
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(m.Buckets, func(b BucketInfo) bool { return b.Name == musicBucket }); i < 0 || m.Buckets[i].Keys != 4 {
		t.Fatalf("manifest buckets %+v", m.Buckets)
	}
	// Older firmware must refuse it by its version, not restore the music
	// records as a bucket of its store.
	if m.Format != FormatMusic {
		t.Fatalf("format %d with music records, want %d", m.Format, FormatMusic)
	}
	for _, f := range []int{FormatVersion, FormatMedia} {
		old := *m
		old.Format = f
		old.Media = nil
		if err := old.validate(DefaultLimits()); !errors.Is(err, ErrFormat) {
			t.Errorf("format %d with music records: %v, want ErrFormat", f, err)
		}
	}

	dst, dstLib := musicBox(t, "DSTMOH2")
	upload(t, dstLib, "jazz", music(16000, 1, 200)) // replaced
	upload(t, dstLib, "old", music(16000, 1, 250))  // removed
	if _, err := dst.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if got := libraryFiles(t, dstLib); !sameFiles(got, want) {
		t.Fatalf("restored classes %v, want %v", keys(got), keys(want))
	}
	if ents, _ := os.ReadDir(filepath.Join(dst.dir, "backups")); slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.IsDir() }) {
		t.Errorf("staging left in the backup directory: %v", ents)
	}
	// The music plays from the restored library.
	srcPCM, err := srcLib.Source("jazz-2", 16000)
	if err != nil {
		t.Fatal(err)
	}
	dstPCM, err := dstLib.Source("jazz-2", 16000)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if a, b := srcPCM.Next(), dstPCM.Next(); !slices.Equal(a, b) {
			t.Fatal("restored class plays other audio")
		}
	}

	// The same box, changed since: back to the backup's classes.
	if err := srcLib.Delete("jazz"); err != nil {
		t.Fatal(err)
	}
	upload(t, srcLib, "rock", music(16000, 1, 700))
	if _, err := src.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if got := libraryFiles(t, srcLib); !sameFiles(got, want) {
		t.Fatalf("same-box restore: classes %v, want %v", keys(got), keys(want))
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestMusicRefused: a class the library's parser refuses makes the whole
// restore refused before anything changes; a backup without music (a box
// without a library made it) leaves the target's library alone; a box
// without a library restores the rest of a backup with music.
func TestMusicRefused(t *testing.T) {
	src, srcLib := musicBox(t, "SRCMOH3")
	upload(t, srcLib, "jazz", music(16000, 1, 440))
	// Not a WAV, written behind the library's back (a damaged disk).
	if err := os.WriteFile(filepath.Join(src.dir, "moh", "bad.wav"), bytes.Repeat([]byte("x"), 4000), 0o600); err != nil {
		t.Fatal(err)
	}
	const pass = "correct horse battery"
	path := makeBackup(t, src, Encryption{Passphrase: pass})
	dst, dstLib := musicBox(t, "DSTMOH4")
	upload(t, dstLib, "mine", music(16000, 1, 300))
	before, beforeFiles := dump(t, dst.db), libraryFiles(t, dstLib)
	if _, err := dst.backup.Restore(path, Decryption{Passphrase: pass}, Actor{Name: "root1"}); !errors.Is(err, ErrFormat) {
		t.Fatalf("restore with a bad class: %v", err)
	}
	assertUnchanged(t, before, dst.db)
	if !sameFiles(libraryFiles(t, dstLib), beforeFiles) {
		t.Fatal("refused restore changed the music")
	}

	// No music in the backup: the target keeps its own.
	plain := newBox(t, "PLAIN5")
	path = makeBackup(t, plain, Encryption{Passphrase: pass})
	if _, err := dst.backup.Restore(path, Decryption{Passphrase: pass}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if !sameFiles(libraryFiles(t, dstLib), beforeFiles) {
		t.Fatal("a backup without music changed the music")
	}

	// A box without a library restores a backup with music (the rest).
	if err := os.Remove(filepath.Join(src.dir, "moh", "bad.wav")); err != nil {
		t.Fatal(err)
	}
	src.clk.t = src.clk.t.Add(time.Minute)
	path = makeBackup(t, src, Encryption{Passphrase: pass})
	if _, err := plain.backup.Restore(path, Decryption{Passphrase: pass}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
}

// FuzzMusicRecords feeds the music records' reader arbitrary keys and
// values: it refuses or hands over whole classes within the bounds, never
// panics.
func FuzzMusicRecords(f *testing.F) {
	f.Add("jazz/0000", []byte(`{"parts":1,"data":"UklGRg=="}`), "a/0000", []byte(`{"parts":2,"data":""}`))
	f.Add("jazz/0001", []byte(`{"parts":1,"data":"UklGRg=="}`), "jazz/0000", []byte(`{"parts":1}`))
	f.Add("x/9999", []byte(`{"parts":5,"data":"AA"}`), "../0000", []byte(`null`))
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte) {
		got := 0
		mr := &musicReader{done: func(class string, file []byte) error {
			if !musicKeyRE.MatchString(class+"/0000") || len(file) > maxMusicParts*musicChunk {
				t.Fatalf("handed over class %q of %d bytes", class, len(file))
			}
			got++
			return nil
		}}
		if err := mr.record(k1, v1); err != nil {
			return
		}
		if err := mr.record(k2, v2); err != nil {
			return
		}
		if mr.end() == nil && got == 0 {
			t.Fatal("records accepted, no class handed over and none pending")
		}
	})
}
