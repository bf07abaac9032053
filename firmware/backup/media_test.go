package backup

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// mediaBox is a box with a recording store under its own media key.
type mediaBox struct {
	*box
	rec  *recording.Store
	keys recording.Keys
}

func newMediaBox(t *testing.T, serial string, quota int64) *mediaBox {
	t.Helper()
	b := newBox(t, serial)
	key := make([]byte, 32)
	rand.Read(key)
	keys, err := recording.StaticKey(key)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(b.dir, "recordings"), Keys: keys,
		Quota: quota, MinFree: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	mb := &mediaBox{box: b, rec: rs, keys: keys}
	mb.backup = mb.mediaService(t)
	return mb
}

func (b *mediaBox) mediaService(t *testing.T) *Service {
	t.Helper()
	s, err := New(Config{DB: b.db, Audit: b.audit, Box: b.id, Dir: filepath.Join(b.dir, "backups"),
		Resealers: resealers(), BoxLocal: DefaultBoxLocal("certs", nil),
		Now: b.clk.Now, Log: quiet(), ScryptWorkFactor: 10, Media: b.rec})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (b *mediaBox) voicemail(t *testing.T) *voicemail.Service {
	t.Helper()
	vm, err := voicemail.New(voicemail.Config{DB: b.db, Audio: voicemail.Recordings{Store: b.rec},
		Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 8),
		Exists: func(e string) bool { return e == "201" }, Now: b.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func tone(rate, hz, ms int) []int16 {
	out := make([]int16, rate*ms/1000)
	for i := range out {
		out[i] = int16(6000 * math.Sin(2*math.Pi*float64(hz)*float64(i)/float64(rate)))
	}
	return out
}

const vmMsgID = "0000000000000001-0a0b0c0d"

// addMedia records a voicemail message for 201 (through voicemail's own
// Recordings) with its message record, and a G.722 call recording.
func (b *mediaBox) addMedia(t *testing.T) (vmFile, callID string) {
	t.Helper()
	w, err := voicemail.Recordings{Store: b.rec}.Create("201 from 100", 8000)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(tone(8000, 440, 2500)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	vmFile = w.ID()
	// voicemail's message record as its service stores it (bucket
	// "voicemail", key msg/<ext>/<id>, the recording in "file").
	rec := map[string]any{"id": vmMsgID, "ext": "201", "caller": "100", "time": b.clk.t,
		"duration": int64(2500 * time.Millisecond), "new": true, "rate": 8000, "file": vmFile}
	if err := b.db.Update(func(tx *store.Tx) error { return tx.Put("voicemail", "msg/201/"+vmMsgID, rec) }); err != nil {
		t.Fatal(err)
	}
	c, _ := codec.New("G722")
	f, err := b.rec.Create("call", recording.Meta{Codec: "G722", SampleRate: 16000, Label: "100 -> 200"})
	if err != nil {
		t.Fatal(err)
	}
	// Several of the backup's 64 KiB media chunks.
	enc := c.Encode(nil, tone(16000, 700, 20_000))
	if _, err := f.Write(enc); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return vmFile, f.ID()
}

func ids(es []recording.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID)
	}
	return out
}

func TestMediaRoundTripOtherKey(t *testing.T) {
	src := newMediaBox(t, "SRC1", 1<<30)
	vmFile, callID := src.addMedia(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := makeBackup(t, src.box, Encryption{Recipient: id.Recipient().String(), Media: true})
	m, err := src.backup.Inspect(path, Decryption{Identity: id.String()})
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatMedia || len(m.Media) != 2 {
		t.Fatalf("manifest: format %d, %d recordings", m.Format, len(m.Media))
	}
	// The backup carries audio only under age: the source's media key
	// appears nowhere in it, and its files' headers neither.
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("EPBXREC")) {
		t.Fatal("backup holds a sealed recording file")
	}

	dst := newMediaBox(t, "DST2", 1<<30)
	if _, err := dst.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if got, want := ids(dst.rec.List("")), ids(src.rec.List("")); !slices.Equal(got, want) {
		t.Fatalf("restored ids %v, want %v", got, want)
	}
	for _, rid := range []string{vmFile, callID} {
		want, wm, err := src.rec.ReadAudio(rid)
		if err != nil {
			t.Fatal(err)
		}
		got, gm, err := dst.rec.ReadAudio(rid)
		if err != nil {
			t.Fatalf("%s on the target: %v", rid, err)
		}
		if !slices.Equal(got, want) || len(got) == 0 {
			t.Fatalf("%s: PCM differs (%d samples against %d)", rid, len(got), len(want))
		}
		if gm.Codec != wm.Codec || gm.Label != wm.Label || gm.Category != wm.Category || !gm.Created.Equal(wm.Created) {
			t.Fatalf("%s: meta %+v, want %+v", rid, gm, wm)
		}
		// Sealed again under the target's key: the source's key opens nothing.
		cat, _ := recording.CheckID(rid)
		f, err := os.Open(filepath.Join(dst.dir, "recordings", rid))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := recording.NewReader(f, src.keys); !errors.Is(err, recording.ErrKey) {
			t.Fatalf("%s (%s) opens with the source's key: %v", rid, cat, err)
		}
		f.Close()
	}
	// The voicemail message plays on the target.
	vm := dst.voicemail(t)
	rate, pcm, err := vm.Audio("201", vmMsgID)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := voicemail.Recordings{Store: src.rec}.Read(vmFile)
	if err != nil {
		t.Fatal(err)
	}
	if rate != 8000 || !slices.Equal(pcm, want) {
		t.Fatalf("voicemail on the target: rate %d, %d samples against %d", rate, len(pcm), len(want))
	}
	if toks, _ := dst.rec.StagingTokens(); len(toks) != 0 {
		t.Fatalf("staging areas left: %v", toks)
	}
	var bound int64
	for _, mi := range m.Media {
		bound += recording.SealedSize(mi.Bytes, mediaMeta(&mi))
	}
	if u := dst.rec.Usage(); u.Files != 2 || u.Used == 0 || u.Used > bound {
		t.Fatalf("target usage %+v, quota check assumed at most %d bytes", u, bound)
	}

	// Restored on the box that made it: the same ids are replaced, not
	// doubled, and still play.
	before := src.rec.Usage()
	if _, err := src.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if u := src.rec.Usage(); u.Files != 2 || u.Used != before.Used {
		t.Fatalf("same-box restore: usage %+v, before %+v", u, before)
	}
	if _, pcm, err := src.voicemail(t).Audio("201", vmMsgID); err != nil || !slices.Equal(pcm, want) {
		t.Fatalf("voicemail after a same-box restore: %v", err)
	}
}

func TestMediaOffByDefault(t *testing.T) {
	src := newMediaBox(t, "SRC1", 1<<30)
	src.addMedia(t)
	id, _ := age.GenerateX25519Identity()
	path := makeBackup(t, src.box, Encryption{Recipient: id.Recipient().String()})
	m, err := src.backup.Inspect(path, Decryption{Identity: id.String()})
	if err != nil {
		t.Fatal(err)
	}
	if m.Format != FormatVersion || len(m.Media) != 0 {
		t.Fatalf("backup without the option: format %d, %d recordings", m.Format, len(m.Media))
	}
	dst := newMediaBox(t, "DST2", 1<<30)
	if _, err := dst.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if n := len(dst.rec.List("")); n != 0 {
		t.Fatalf("%d recordings restored from a backup without media", n)
	}
	// Scheduled backups follow the setting.
	if err := src.backup.SetSettings(Settings{Recipient: id.Recipient().String(), Daily: 1, Media: true}, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if err := src.backup.RunDue(); err != nil {
		t.Fatal(err)
	}
	files, _ := src.backup.List()
	var daily string
	for _, f := range files {
		if f.Kind == Daily {
			daily = filepath.Join(src.backup.cfg.Dir, f.Name)
		}
	}
	if m, err := src.backup.Inspect(daily, Decryption{Identity: id.String()}); err != nil || len(m.Media) != 2 {
		t.Fatalf("scheduled backup with the media setting: %v", err)
	}
}

func TestMediaNeedsAStore(t *testing.T) {
	src := newMediaBox(t, "SRC1", 1<<30)
	src.addMedia(t)
	id, _ := age.GenerateX25519Identity()
	path := makeBackup(t, src.box, Encryption{Recipient: id.Recipient().String(), Media: true})
	plain := newBox(t, "DST2") // no media store
	if _, err := plain.backup.Create(Manual, Encryption{Recipient: id.Recipient().String(), Media: true}, Actor{}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("backup with media on a box without recordings: %v", err)
	}
	if err := plain.backup.SetSettings(Settings{Media: true}, Actor{}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("media setting on a box without recordings: %v", err)
	}
	before := dump(t, plain.db)
	if _, err := plain.backup.Restore(path, Decryption{Identity: id.String()}, Actor{}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("restore of media on a box without recordings: %v", err)
	}
	assertUnchanged(t, before, plain.db)
}

// assertUnchanged compares the store with before, less the audit log
// (a refusal is audited).
func assertUnchanged(t *testing.T, before map[string]string, db *store.DB) {
	t.Helper()
	after := dump(t, db)
	for k, v := range before {
		if after[k] != v && !isAudit(k) {
			t.Fatalf("%s changed", k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && !isAudit(k) {
			t.Fatalf("%s appeared", k)
		}
	}
}

func isAudit(k string) bool {
	return bytes.HasPrefix([]byte(k), []byte("audit."))
}

// tamper decrypts path, lets mutate change the plaintext, and encrypts it
// again to id: age is intact, the content is not.
func tamper(t *testing.T, path string, id *age.X25519Identity, mutate func([]byte) []byte) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := age.Decrypt(f, id)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	plain = mutate(plain)
	var out bytes.Buffer
	w, _ := age.Encrypt(&out, id.Recipient())
	w.Write(plain)
	w.Close()
	p := filepath.Join(t.TempDir(), "tampered.age")
	if err := os.WriteFile(p, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMediaRefusalsChangeNothing(t *testing.T) {
	src := newMediaBox(t, "SRC1", 1<<30)
	src.addMedia(t)
	id, _ := age.GenerateX25519Identity()
	path := makeBackup(t, src.box, Encryption{Recipient: id.Recipient().String(), Media: true})
	dst := newMediaBox(t, "DST2", 1<<30)
	// The target has a recording and data of its own.
	own, err := dst.rec.Create("call", recording.Meta{Codec: "PCMA", SampleRate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	own.Write(bytes.Repeat([]byte{0xd5}, 4000))
	own.Close()
	dst.addMedia(t)
	flip := func(off int) func([]byte) []byte {
		return func(p []byte) []byte { p[len(p)-off] ^= 1; return p }
	}
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		want   error
	}{
		{"audio byte flipped", flip(10), ErrCorrupt},
		{"last chunk cut", func(p []byte) []byte { return p[:len(p)-100] }, ErrCorrupt},
		{"trailing data", func(p []byte) []byte { return append(p, 0, 0, 0, 1, 7) }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tamper(t, path, id, tc.mutate)
			before, files := dump(t, dst.db), ids(dst.rec.List(""))
			_, err := dst.backup.Restore(bad, Decryption{Identity: id.String()}, Actor{Name: "root1"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("restore: %v, want %v", err, tc.want)
			}
			assertUnchanged(t, before, dst.db)
			if got := ids(dst.rec.List("")); !slices.Equal(got, files) {
				t.Fatalf("recordings %v, before %v", got, files)
			}
			if toks, _ := dst.rec.StagingTokens(); len(toks) != 0 {
				t.Fatalf("staging areas left: %v", toks)
			}
		})
	}
	// A target whose quota cannot take the recordings refuses before
	// anything changes, and says why.
	small := newMediaBox(t, "DST3", 8<<10)
	before := dump(t, small.db)
	_, err = small.backup.Restore(path, Decryption{Identity: id.String()}, Actor{Name: "root1"})
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, recording.ErrQuota) {
		t.Fatalf("restore over the quota: %v", err)
	}
	assertUnchanged(t, before, small.db)
	if n := len(small.rec.List("")); n != 0 {
		t.Fatalf("%d recordings after a refused restore", n)
	}
}

// TestMediaCrashBetweenCommitAndMove: a staging area the store names (its
// restore committed) is moved into place at the next start; one it does
// not name (the restore never committed) is removed.
func TestMediaCrashBetweenCommitAndMove(t *testing.T) {
	b := newMediaBox(t, "BOX1", 1<<30)
	stage := func(tok, id string) {
		st, err := b.rec.NewStaging(tok)
		if err != nil {
			t.Fatal(err)
		}
		cat, _ := recording.CheckID(id)
		f, err := st.Create(id, recording.Meta{Codec: "PCMA", SampleRate: 8000, Category: cat, Created: time.Unix(0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		f.Write(bytes.Repeat([]byte{0xd5}, 8000))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const committed, orphan = "00112233445566778899aabbccddeeff", "ffeeddccbbaa99887766554433221100"
	stage(committed, "voicemail/1-0123456789abcdef.rec")
	stage(orphan, "voicemail/2-0123456789abcdef.rec")
	if err := b.db.Update(func(tx *store.Tx) error { return tx.Put(stateBucket, mediaRestoreKey, committed) }); err != nil {
		t.Fatal(err)
	}
	b.mediaService(t) // the next start
	if got := ids(b.rec.List("")); !slices.Equal(got, []string{"voicemail/1-0123456789abcdef.rec"}) {
		t.Fatalf("recordings after recovery: %v", got)
	}
	if pcm, _, err := b.rec.ReadAudio("voicemail/1-0123456789abcdef.rec"); err != nil || len(pcm) != 8000 {
		t.Fatalf("recovered recording: %d samples, %v", len(pcm), err)
	}
	if toks, _ := b.rec.StagingTokens(); len(toks) != 0 {
		t.Fatalf("staging areas left: %v", toks)
	}
}
