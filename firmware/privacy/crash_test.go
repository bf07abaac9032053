package privacy

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// openBox builds the registry and every category over an existing store
// file, as edgepbxd does at start (the box is already claimed).
func openBox(t testing.TB, path string, key []byte) *box {
	t.Helper()
	db, err := store.Open(path, key)
	if err != nil {
		t.Fatalf("reopen %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	b := &box{path: path, db: db, clk: &fakeClock{t: time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)}}
	b.audit = audit.New(db, b.clk)
	if b.reg, err = New(db, b.audit, b.clk); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.conns = connlog.New(db, b.clk, b.reg.Anonymiser("connections"))
	if b.auth, err = auth.New(auth.Config{DB: db, Clock: b.clk, Audit: b.audit, Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 16),
		SetupCode: auth.SetupCode("AAAA-BBBB-CCCC"), Logger: quiet, Connections: b.conns, AnonymiseSource: b.reg.Anonymiser("login_history")}); err != nil {
		t.Fatal(err)
	}
	b.cdr = cdr.New(db)
	if b.sec, err = logs.New(db, 1000); err != nil {
		t.Fatal(err)
	}
	if b.intr, err = intrusion.New(intrusion.Config{DB: db, Now: b.clk.Now, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Category{CDRs{DB: db, Store: b.cdr}, SecurityLog{DB: db, Log: b.sec}, Audit{DB: db, Log: b.audit},
		LoginHistory{DB: db, Auth: b.auth}, Connections{DB: db, Log: b.conns}, Intrusion{DB: db, Agg: b.intr},
		fileCategory{dir: filepath.Join(filepath.Dir(path), "files")}} {
		if err := b.reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// fileCategory keeps one file per item, named "<subject>-<n>", in dir:
// the kind of category (voicemail, recordings) that lives outside the
// store, so Forget erases it after its transaction, under the pending
// record.
type fileCategory struct{ dir string }

func (fileCategory) Info() Info {
	return Info{Name: "files", Title: "Files", PersonalData: true, Holds: "test files", Default: Policy{Days: 30, Anonymise: Full},
		MinDays: 1, MaxDays: 365, Subjects: []SubjectKind{Extension}, Forgettable: true}
}

func (c fileCategory) list(s Subject) ([]string, error) {
	return filepath.Glob(filepath.Join(c.dir, s.Value+"-*"))
}

func (c fileCategory) Size() (Size, error) {
	all, err := filepath.Glob(filepath.Join(c.dir, "*"))
	return Size{Items: len(all)}, err
}
func (fileCategory) Sweep(time.Time, Policy) (Swept, error) { return Swept{}, nil }
func (c fileCategory) Find(s Subject) (int, error) {
	l, err := c.list(s)
	return len(l), err
}
func (c fileCategory) Export(s Subject) (any, error) { return c.list(s) }
func (c fileCategory) Forget(s Subject) (int, error) {
	l, err := c.list(s)
	if err != nil {
		return 0, err
	}
	for _, f := range l {
		if err := os.Remove(f); err != nil {
			return 0, err
		}
	}
	d, err := os.Open(c.dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return len(l), d.Sync()
}

// forgetChildEnv makes the test binary the process that crashes in the
// middle of a Forget: "path|key hex|stage|category".
const forgetChildEnv = "EDGEPBX_PRIVACY_FORGET_CHILD"

// crashSubject is whom the crash tests forget; 302 must stay.
var crashSubject = Subject{Kind: Extension, Value: "301"}

// TestForgetCrashChild is the child half of TestForgetCrash: it opens
// the store, forgets crashSubject and kills itself (SIGKILL: no deferred
// code, no Close) at the stage it is told. It does nothing in a normal run.
func TestForgetCrashChild(t *testing.T) {
	spec := os.Getenv(forgetChildEnv)
	if spec == "" {
		t.Skip("only runs as TestForgetCrash's child process")
	}
	f := strings.Split(spec, "|")
	key, err := hex.DecodeString(f[1])
	if len(f) != 4 || err != nil {
		t.Fatalf("bad %s=%q", forgetChildEnv, spec)
	}
	die := func() {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	b := openBox(t, f[0], key)
	switch f[2] {
	case "in-tx":
		b.reg.afterErase = func(name string) error {
			if name == f[3] {
				die()
			}
			return nil
		}
	case "after-commit":
		b.reg.afterCommit = die
	default:
		t.Fatalf("stage %q", f[2])
	}
	_, err = b.reg.Forget("root1", "192.0.2.1", crashSubject)
	fmt.Printf("forget returned: %v\n", err)
	os.Exit(3)
}

// held counts, per category, the items about s (memory and store).
func (b *box) held(t testing.TB, s Subject) map[string]int {
	t.Helper()
	found, err := b.reg.Find(s)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, f := range found {
		if f.Error != "" {
			t.Fatalf("find %s: %s", f.Category, f.Error)
		}
		if !f.Kept {
			m[f.Category] = f.Items
		}
	}
	return m
}

func (b *box) pending(t testing.TB) []string {
	t.Helper()
	var refs []string
	if err := b.db.View(func(tx *store.Tx) error {
		return tx.ForEach(pendingBucket, func(k string, _ []byte) error { refs = append(refs, k); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return refs
}

func (b *box) audited(t testing.TB, action string) []audit.Entry {
	t.Helper()
	es, err := b.audit.Query(audit.Filter{Action: action})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// seedCrashBox writes data about 301 and 302 into every category and
// returns a consistent copy of the file, its key and what it holds about
// 301.
func seedCrashBox(t *testing.T) ([]byte, []byte, map[string]int) {
	t.Helper()
	b := newBox(t, false, nil)
	src := netip.MustParseAddr("192.0.2.10")
	b.fill(t, "s1", "301", "alice", src)
	b.fill(t, "s2", "302", "bob", src)
	b.call(t, "in-1", "+4989555301", "301")
	want := b.held(t, crashSubject)
	for _, c := range []string{"cdrs", "security_log", "connections", "intrusion"} {
		if want[c] == 0 {
			t.Fatalf("seed: nothing about 301 in %s: %v", c, want)
		}
	}
	var file bytes.Buffer
	if _, err := b.db.Backup(&file); err != nil {
		t.Fatal(err)
	}
	return file.Bytes(), b.key, want
}

// TestForgetCrash kills a real process (SIGKILL) in the middle of a
// Forget, at each step of its transaction and between its commit and
// its completion, and reopens the store: either nothing about the subject
// was erased or everything was, never a part; the audit log says so
// (no forget entry, or the one entry committed with the deletions), and
// a committed Forget is completed at the next start (Resume: freed pages
// zeroed, a second entry says so). The categories commit in one
// transaction; before, each deleted in its own and a crash after the
// first left call records gone and the rest in place.
func TestForgetCrash(t *testing.T) {
	raw, key, want := seedCrashBox(t)
	want["files"] = 1 // a file category outside the store, added at reopen
	none := map[string]int{}
	for c := range want {
		none[c] = 0
	}
	for _, tc := range []struct {
		name, stage, category string
		erased                bool
	}{
		{"after the call records, inside the transaction", "in-tx", "cdrs", false},
		{"after the connection log, inside the transaction", "in-tx", "connections", false},
		{"after the last category, before the audit entry and the commit", "in-tx", "intrusion", false},
		{"after the commit, before the completion", "after-commit", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edgepbx.db")
			if err := os.WriteFile(path, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			files := filepath.Join(filepath.Dir(path), "files")
			if err := os.Mkdir(files, 0o700); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"301-1", "302-1"} {
				if err := os.WriteFile(filepath.Join(files, f), []byte("audio"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestForgetCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), forgetChildEnv+"="+strings.Join([]string{path, hex.EncodeToString(key), tc.stage, tc.category}, "|"))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at its stage: %v\n%s", err, out)
			}

			b := openBox(t, path, key) // bbolt's consistency check runs here
			got := b.held(t, crashSubject)
			forgets := b.audited(t, "privacy.forget")
			switch {
			case !tc.erased:
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("crash inside the transaction: held about 301 %v, before %v (a part was erased)", got, want)
				}
				if len(forgets) != 0 || len(b.pending(t)) != 0 {
					t.Fatalf("rolled back, yet %d forget entries and pending %v", len(forgets), b.pending(t))
				}
			default:
				// The store's categories went with the commit; the file
				// category (outside the store) waits for the completion.
				stillFile := maps.Clone(none)
				stillFile["files"] = 1
				if fmt.Sprint(got) != fmt.Sprint(stillFile) {
					t.Fatalf("crash after the commit: held about 301 %v, want %v", got, stillFile)
				}
				if len(forgets) != 1 || forgets[0].Outcome != audit.OK || !strings.Contains(forgets[0].Detail, "cdrs: 2 deleted") {
					t.Fatalf("committed forget audited as %+v", forgets)
				}
				if p := b.pending(t); len(p) != 1 || !strings.Contains(forgets[0].Detail, p[0]) {
					t.Fatalf("pending completion %v, audit %q", p, forgets[0].Detail)
				}
				// The next start completes it.
				if err := b.reg.Resume(); err != nil {
					t.Fatal(err)
				}
				if p := b.pending(t); len(p) != 0 {
					t.Fatalf("pending after Resume: %v", p)
				}
				if got := b.held(t, crashSubject); fmt.Sprint(got) != fmt.Sprint(none) {
					t.Fatalf("after Resume: held about 301 %v, want none", got)
				}
				if n := b.held(t, Subject{Kind: Extension, Value: "302"}); n["files"] != 1 {
					t.Fatalf("302's file went too: %v", n)
				}
				done := b.audited(t, "privacy.erased")
				if len(done) != 1 || !strings.Contains(done[0].Detail, "files: 1 deleted") || !strings.Contains(done[0].Detail, "freed pages zeroed") ||
					!strings.Contains(done[0].Detail, "after a restart") || strings.Contains(done[0].Detail, "301") {
					t.Fatalf("completion audited as %+v", done)
				}
				if err := b.db.Close(); err != nil {
					t.Fatal(err)
				}
				file, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(file, []byte("+4989555301")) {
					t.Fatal("the forgotten number is still in the file's bytes after the completion")
				}
				return
			}
			// 302 is untouched either way, and a Forget now (the request
			// repeated) erases everything in one go.
			if n := b.held(t, Subject{Kind: Extension, Value: "302"}); n["cdrs"] != 1 || n["intrusion"] != 1 {
				t.Fatalf("302 holds %v", n)
			}
			if _, err := b.reg.Forget("root1", "192.0.2.1", crashSubject); err != nil {
				t.Fatal(err)
			}
			if got := b.held(t, crashSubject); fmt.Sprint(got) != fmt.Sprint(none) {
				t.Fatalf("repeated forget left %v", got)
			}
		})
	}
}

// TestForgetFailedWrite fails the transaction with a real error after
// some categories' deletions (as a full disk or a damaged record would):
// nothing is erased, not in the store and not from the logs' memory, the
// audit entry says the forget failed and deleted nothing, and the writers
// it held (flushes of the security and connection logs, the intrusion
// report) run again.
func TestForgetFailedWrite(t *testing.T) {
	b := newBox(t, false, nil)
	src := netip.MustParseAddr("192.0.2.10")
	b.fill(t, "s1", "301", "alice", src)
	b.call(t, "in-1", "+4989555301", "301")
	want := b.held(t, crashSubject)
	for _, after := range []string{"cdrs", "security_log", "connections", "intrusion"} {
		b.reg.afterErase = func(name string) error {
			if name == after {
				return errors.New("injected write failure")
			}
			return nil
		}
		_, err := b.reg.Forget("root1", "192.0.2.1", crashSubject)
		if err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("failure after %s: Forget answered %v", after, err)
		}
		if got := b.held(t, crashSubject); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("failure after %s: held %v, before %v", after, got, want)
		}
		if recent := b.sec.Recent(1000); !containsUser(recent, "301") {
			t.Fatalf("failure after %s: the security log's memory lost 301's events", after)
		}
		es := b.audited(t, "privacy.forget")
		if len(es) == 0 || es[0].Outcome != audit.Failed || !strings.Contains(es[0].Detail, "nothing deleted") {
			t.Fatalf("failure after %s: audit %+v", after, es)
		}
	}
	// The held writers were released: they flush again.
	b.sec.Record(logs.Event{Time: b.clk.Now(), Kind: logs.KindRegister, Source: "192.0.2.11:5060", User: "303"})
	b.conns.Record(connlog.Entry{Time: b.clk.Now(), Kind: connlog.SIPRegister, Source: "192.0.2.11:5060", User: "303", Method: "REGISTER", Result: connlog.OK})
	b.intr.Observe(logs.Event{Time: b.clk.Now(), Kind: logs.KindAuthFailure, Source: "192.0.2.11:5060", User: "303"})
	flushed := make(chan error, 3)
	go func() { flushed <- b.sec.Flush(); flushed <- b.conns.Flush(); flushed <- b.intr.Flush() }()
	for range 3 {
		select {
		case err := <-flushed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second): // a deadlock, not a performance limit
			t.Fatal("a writer held by the failed forget was not released")
		}
	}
	b.reg.afterErase = nil
	if _, err := b.reg.Forget("root1", "192.0.2.1", crashSubject); err != nil {
		t.Fatal(err)
	}
	for c, n := range b.held(t, crashSubject) {
		if n != 0 {
			t.Errorf("after the forget that committed, %s holds %d items about 301", c, n)
		}
	}
	if _, err := b.auth.Login(context.Background(), auth.Client{Addr: src, Port: 1}, "root1", rootPW); err != nil {
		t.Fatalf("login after the forgets: %v", err)
	}
}

func containsUser(es []logs.Event, user string) bool {
	for _, e := range es {
		if e.User == user {
			return true
		}
	}
	return false
}
