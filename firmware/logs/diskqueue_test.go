package logs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func openTestQueue(t testing.TB, dir string, limit int64, onDrop func(uint64)) *diskQueue {
	t.Helper()
	q, err := openDiskQueue(diskQueueConfig{Dir: dir, LimitBytes: limit, CommitEvery: 2 * time.Millisecond, MaxPending: 4096,
		Logger: slog.New(slog.DiscardHandler), OnDrop: onDrop})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func testEvent(i int) item {
	return item{kind: itemEvent, ev: Event{Seq: uint64(i), Time: time.Unix(1e9+int64(i), 0), Kind: KindAuthFailure,
		Source: "198.51.100.7:5060", Transport: "UDP", User: strconv.Itoa(100 + i%50), UserAgent: "friendly-scanner", Reason: "wrong password"}}
}

// waitCommitted waits until records below seq are fsync'd.
func waitCommitted(q *diskQueue, seq uint64) {
	for q.committedSeq() < seq {
		time.Sleep(time.Millisecond)
	}
}

// drain reads every record the queue hands out now.
func drain(q *diskQueue) []entry {
	var out []entry
	for {
		n := len(out)
		out = q.next(out, 64)
		if len(out) == n {
			return out
		}
	}
}

func eventSeqs(es []entry) []uint64 {
	var s []uint64
	for _, e := range es {
		s = append(s, e.it.ev.Seq)
	}
	return s
}

func seqRange(from, to int) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, uint64(i))
	}
	return s
}

// TestDiskQueueRestartResendsUnconfirmed: what was handed out but not
// confirmed, and what was never handed out, comes back after a restart,
// in order, intact; what was confirmed does not.
func TestDiskQueueRestartResendsUnconfirmed(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 1<<20, nil)
	for i := 1; i <= 300; i++ {
		q.push(testEvent(i))
	}
	waitCommitted(q, 301)
	got := drain(q)
	if !slices.Equal(eventSeqs(got), seqRange(1, 300)) {
		t.Fatalf("first read: %v", eventSeqs(got))
	}
	q.confirm(got[99].seq) // the collector confirmed 100
	q.rewind()             // the connection ended
	if s := eventSeqs(drain(q)); !slices.Equal(s, seqRange(101, 300)) {
		t.Fatalf("after rewind: %v", s)
	}
	q.auditMark(42)
	q.push(testEvent(301))
	if err := q.close(); err != nil {
		t.Fatal(err)
	}

	q = openTestQueue(t, dir, 1<<20, nil)
	defer q.close()
	got = drain(q)
	if !slices.Equal(eventSeqs(got), seqRange(101, 301)) {
		t.Fatalf("after restart: %v", eventSeqs(got))
	}
	if want := testEvent(150); !reflect.DeepEqual(got[49].it.ev.Time.Unix(), want.ev.Time.Unix()) || got[49].it.ev.User != want.ev.User ||
		got[49].it.ev.Reason != want.ev.Reason || got[49].it.ev.Kind != want.ev.Kind {
		t.Errorf("record 150 came back as %+v", got[49].it.ev)
	}
	if m, ok := q.resumeMark(); !ok || m != 42 {
		t.Errorf("audit position %d %v, want 42", m, ok)
	}
	// New records continue the sequence.
	q.push(testEvent(302))
	waitCommitted(q, got[len(got)-1].seq+2)
	if s := eventSeqs(drain(q)); !slices.Equal(s, []uint64{302}) {
		t.Errorf("after the restart's push: %v", s)
	}
	if st := q.stats(); st.queued != 202 || st.dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDiskQueueTornTail: a write cut by a power cut or a damaged tail
// loses only the damaged records; the rest is read back and the queue
// goes on.
func TestDiskQueueTornTail(t *testing.T) {
	cases := []struct {
		name   string
		damage func(b []byte) []byte
		keep   int // records that survive of 20
	}{
		{"half a header", func(b []byte) []byte { return append(b, 0x20, 0) }, 20},
		{"cut inside the last record", func(b []byte) []byte { return b[:len(b)-5] }, 19},
		{"zeros after a power cut", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, 20},
		{"flipped bit in the last record", func(b []byte) []byte { b[len(b)-3] ^= 0x10; return b }, 19},
		{"garbage length", func(b []byte) []byte { return append(b, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4) }, 20},
		{"whole file zeroed", func(b []byte) []byte { return make([]byte, len(b)) }, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			q := openTestQueue(t, dir, 1<<20, nil)
			for i := 1; i <= 20; i++ {
				q.push(testEvent(i))
			}
			if err := q.close(); err != nil {
				t.Fatal(err)
			}
			segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			if len(segs) != 1 {
				t.Fatalf("segments %v", segs)
			}
			b, _ := os.ReadFile(segs[0])
			if err := os.WriteFile(segs[0], c.damage(bytes.Clone(b)), 0o600); err != nil {
				t.Fatal(err)
			}
			q = openTestQueue(t, dir, 1<<20, nil)
			defer q.close()
			if s := eventSeqs(drain(q)); !slices.Equal(s, seqRange(1, c.keep)) {
				t.Fatalf("recovered %v, want 1..%d", s, c.keep)
			}
			q.push(testEvent(99))
			waitCommitted(q, uint64(c.keep)+2)
			if s := eventSeqs(drain(q)); !slices.Equal(s, []uint64{99}) {
				t.Errorf("after recovery a new record reads %v", s)
			}
		})
	}
}

// TestDiskQueueCorruptMiddleSegment: a damaged older segment costs its
// damaged records (counted as dropped), not the segments after it.
func TestDiskQueueCorruptMiddleSegment(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 1<<20, nil)
	for i := 1; i <= 10; i++ {
		q.push(testEvent(i))
	}
	q.close()
	q = openTestQueue(t, dir, 1<<20, nil) // a second segment
	for i := 11; i <= 20; i++ {
		q.push(testEvent(i))
	}
	q.close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	slices.Sort(segs)
	if len(segs) != 2 {
		t.Fatalf("segments %v", segs)
	}
	b, _ := os.ReadFile(segs[0])
	b[len(b)/2] ^= 0xff
	os.WriteFile(segs[0], b, 0o600)
	q = openTestQueue(t, dir, 1<<20, nil)
	defer q.close()
	s := eventSeqs(drain(q))
	if len(s) < 10 || !slices.Equal(s[len(s)-10:], seqRange(11, 20)) || !slices.IsSorted(s) {
		t.Fatalf("recovered %v", s)
	}
	if st := q.stats(); st.dropped != uint64(20-len(s)) {
		t.Errorf("dropped %d, lost %d", st.dropped, 20-len(s))
	}
}

// TestDiskQueueBound: with nobody reading, the queue stays within its
// bound, drops its oldest records, counts them and reports them.
func TestDiskQueueBound(t *testing.T) {
	dir := t.TempDir()
	const limit = 32 << 10
	var reported atomic.Uint64
	q := openTestQueue(t, dir, limit, func(n uint64) { reported.Add(n) })
	const total = 2000
	for i := 1; i <= total; i++ {
		q.push(testEvent(i))
		if i%100 == 0 {
			waitCommitted(q, uint64(i)+1) // several commits, several segments
		}
	}
	waitCommitted(q, total+1)
	st := q.stats()
	var onDisk int64
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, p := range segs {
		fi, _ := os.Stat(p)
		onDisk += fi.Size()
	}
	if onDisk > limit || st.bytes != onDisk || st.dropped == 0 || st.dropped+uint64(st.queued) != total {
		t.Fatalf("bound %d: on disk %d, stats %+v", limit, onDisk, st)
	}
	got := eventSeqs(drain(q))
	if !slices.Equal(got, seqRange(total-len(got)+1, total)) {
		t.Errorf("kept %v, want the newest", got)
	}
	if reported.Load() == 0 || reported.Load() > st.dropped {
		t.Errorf("reported %d drops of %d", reported.Load(), st.dropped)
	}
	q.close()
	// The counter survives a restart.
	q = openTestQueue(t, dir, limit, nil)
	defer q.close()
	if st2 := q.stats(); st2.dropped != st.dropped {
		t.Errorf("dropped after restart %d, want %d", st2.dropped, st.dropped)
	}
}

// TestDiskQueueConfirmedSegmentsRemoved: confirmed records leave the disk.
func TestDiskQueueConfirmedSegmentsRemoved(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 64<<10, nil)
	defer q.close()
	for i := 1; i <= 500; i++ {
		q.push(testEvent(i))
		if i%50 == 0 {
			waitCommitted(q, uint64(i)+1)
		}
	}
	waitCommitted(q, 501)
	got := drain(q)
	q.confirm(got[len(got)-1].seq)
	q.push(testEvent(501)) // the next commit removes what was confirmed
	waitCommitted(q, 502)
	for {
		segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
		if len(segs) == 1 {
			break
		}
		q.push(testEvent(0))
		time.Sleep(5 * time.Millisecond)
	}
	if st := q.stats(); st.dropped != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDiskQueueKill9 kills a child process that writes the queue as fast
// as it can; every record it reported committed is there afterwards.
func TestDiskQueueKill9(t *testing.T) {
	if dir := os.Getenv("EDGEPBX_SYSLOGQ_CHILD"); dir != "" {
		queueChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskQueueKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGEPBX_SYSLOGQ_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var committed uint64
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "committed "); ok {
			committed, _ = strconv.ParseUint(v, 10, 64)
			if committed > 20000 {
				break
			}
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out)
	cmd.Wait()
	if committed <= 20000 {
		t.Fatalf("child reported %d committed", committed)
	}
	q := openTestQueue(t, dir, 256<<20, nil)
	defer q.close()
	got := drain(q)
	if uint64(len(got)) < committed-1 {
		t.Fatalf("%d records after kill -9, %d were reported committed", len(got), committed-1)
	}
	for i, e := range got {
		if e.seq != uint64(i+1) || e.it.ev.Seq != uint64(i+1) {
			t.Fatalf("record %d: seq %d event %d", i+1, e.seq, e.it.ev.Seq)
		}
	}
	t.Logf("reported committed below %d, found %d records", committed, len(got))
}

// queueChild pushes events until killed, printing the committed position.
func queueChild(dir string) {
	q, err := openDiskQueue(diskQueueConfig{Dir: dir, LimitBytes: 256 << 20, CommitEvery: time.Millisecond, MaxPending: 1 << 20,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var last uint64
	for i := 1; ; i++ {
		q.push(testEvent(i))
		if i%64 == 0 {
			if c := q.committedSeq(); c != last {
				last = c
				fmt.Println("committed", c)
			}
		}
	}
}

// FuzzDecodeRecord: the record decoder takes any bytes (the data
// partition is in the hands of whoever holds the disk) without panicking,
// and what it accepts encodes back to the same item.
func FuzzDecodeRecord(f *testing.F) {
	for _, it := range []item{testEvent(7), {kind: itemAudit, au: AuditRecord{Seq: 3, Time: time.Unix(5, 6), Actor: "admin",
		Action: "account.create", Outcome: "ok", Hash: strings.Repeat("a", 64)}}, {kind: itemEvent},
		{kind: itemSummary, sum: &summary{time: time.Unix(86400, 0), msgid: "intrusion.daily", text: "3 bans",
			params: []SDParam{{"bans", "3"}, {"top_source", "203.0.113.9"}}}}} {
		f.Add(appendRecord(nil, 9, &it))
	}
	f.Add([]byte{})
	f.Add([]byte{9, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, crc, err := recordLen(b)
		if err != nil {
			return
		}
		p := b[recHeader:]
		if len(p) < n {
			return
		}
		seq, it, err := decodeRecord(p[:n], crc)
		if err != nil {
			return
		}
		again := appendRecord(nil, seq, &it)
		n2, crc2, err := recordLen(again)
		if err != nil {
			t.Fatalf("re-encoded header: %v", err)
		}
		seq2, it2, err := decodeRecord(again[recHeader:recHeader+n2], crc2)
		if err != nil || seq2 != seq || !reflect.DeepEqual(it2, it) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, it, it2)
		}
	})
}

// FuzzQueueSegment: any file content as a segment opens and reads back
// only valid records, in sequence.
func FuzzQueueSegment(f *testing.F) {
	var seg []byte
	for i := 1; i <= 3; i++ {
		it := testEvent(i)
		seg = appendRecord(seg, uint64(i), &it)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-4])
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		q := openTestQueue(t, dir, 1<<20, nil)
		defer q.close()
		got := drain(q)
		for i, e := range got {
			if e.seq != uint64(i+1) {
				t.Fatalf("record %d has seq %d", i, e.seq)
			}
		}
		// What follows recovery (new records continue the sequence) is
		// TestDiskQueueTornTail's: the writer's timing has no place here.
		if st := q.stats(); st.queued != len(got) {
			t.Fatalf("queued %d, read %d", st.queued, len(got))
		}
	})
}

var benchEvent = Event{Kind: KindAuthFailure, Source: "192.0.2.7:5060", Transport: "UDP", User: "100",
	UserAgent: "friendly-scanner", Reason: "wrong password"}

// BenchmarkDiskQueueEnqueue: the producer's cost per event with the disk
// queue (Sender.Event, which never touches the disk), and events/s
// committed (written and fsync'd) by the writer, bytes per event on disk.
func BenchmarkDiskQueueEnqueue(b *testing.B) {
	dir := b.TempDir()
	s, err := OpenSender(SenderConfig{Hostname: "box", QueueDir: dir, QueueBytes: 1 << 30, QueueSize: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Apply(SyslogSettings{Enabled: true, Address: "127.0.0.1:9", Transport: TransportTCP, Facility: FacilityAuto}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	b.ResetTimer()
	var produce time.Duration
	for i := 0; i < b.N; i++ {
		if i%(1<<19) == 0 && i > 0 {
			// Stay below the in-memory bound: wait for the writer.
			t := time.Now()
			waitCommitted(s.disk, uint64(i)+1)
			produce -= time.Since(t)
		}
		s.Event(benchEvent)
	}
	produce += time.Since(start)
	waitCommitted(s.disk, uint64(b.N)+1)
	elapsed := time.Since(start)
	b.StopTimer()
	st := s.Status()
	if st.Dropped != 0 {
		b.Fatalf("dropped %d", st.Dropped)
	}
	b.ReportMetric(float64(produce.Nanoseconds())/float64(b.N), "ns/produce")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "committed-events/s")
	b.ReportMetric(float64(st.QueueBytes)/float64(b.N), "disk-bytes/event")
	s.Close()
}

// BenchmarkDiskQueueDeliver: events/s from a filled disk queue to a TLS
// collector on loopback, counted when the collector's TCP acknowledged
// them and they left the queue.
func BenchmarkDiskQueueDeliver(b *testing.B) {
	dir := b.TempDir()
	cfg := SenderConfig{Hostname: "box", QueueDir: dir, QueueBytes: 1 << 30, QueueSize: 1 << 20, ConfirmAfter: time.Millisecond}
	s, err := OpenSender(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ca := newTestCA(b)
	col := startCollector(b, TransportTLS, "127.0.0.1:0", &ca.pair, true)
	go func() {
		for range col.msgs {
		}
	}()
	s.on.Store(true) // queue without a connection
	for i := 0; i < b.N; i++ {
		if i%(1<<19) == 0 && i > 0 {
			waitCommitted(s.disk, uint64(i)+1)
		}
		s.Event(benchEvent)
	}
	waitCommitted(s.disk, uint64(b.N)+1)
	s.Close()
	// A restart: delivery reads everything back from disk.
	if s, err = OpenSender(cfg); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	if err := s.Apply(SyslogSettings{Enabled: true, Address: col.addr, Transport: TransportTLS, Facility: FacilityAuto, CAPEM: ca.caPEM}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	for s.Status().Queued != 0 {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "delivered-events/s")
}

// BenchmarkSenderEventDisk is the producer's cost (SIP hot path) with the
// disk queue, producers on every core against the writer goroutine.
func BenchmarkSenderEventDisk(b *testing.B) {
	s, err := OpenSender(SenderConfig{QueueDir: b.TempDir(), QueueBytes: 256 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.on.Store(true)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Event(benchEvent)
		}
	})
}

// BenchmarkBboltQueueBaseline is the alternative the disk queue was
// chosen against: the same records as keys of a bbolt bucket, one
// transaction per 1,000 (the group commit), then the bucket emptied as a
// sender would after confirmation. Reports events/s and file bytes per
// event (bbolt never shrinks its file).
func BenchmarkBboltQueueBaseline(b *testing.B) {
	path := filepath.Join(b.TempDir(), "q.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	it := item{kind: itemEvent, ev: benchEvent}
	b.ResetTimer()
	for i := 0; i < b.N; i += 1000 {
		err := db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("q"))
			if err != nil {
				return err
			}
			for j := i; j < min(i+1000, b.N); j++ {
				rec := appendRecord(nil, uint64(j+1), &it)
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(j+1)), rec[recHeader:]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fi, _ := os.Stat(path)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "committed-events/s")
	b.ReportMetric(float64(fi.Size())/float64(b.N), "file-bytes/event")
}

// TestDiskQueueKeepsEveryKind: events, audit entries and report summaries
// come back from disk as they went in.
func TestDiskQueueKeepsEveryKind(t *testing.T) {
	dir := t.TempDir()
	want := []item{testEvent(1),
		{kind: itemAudit, au: AuditRecord{Seq: 3, Time: time.Unix(5, 6), Actor: "admin", Source: "192.0.2.9", Action: "account.create",
			Target: "bob", Outcome: "ok", Detail: "role operator", Hash: strings.Repeat("a", 64)}},
		{kind: itemSummary, sum: &summary{time: time.Unix(86400, 0), msgid: "intrusion.daily", text: "3 bans",
			params: []SDParam{{"bans", "3"}, {"top_source", "203.0.113.9"}}}}}
	q := openTestQueue(t, dir, 1<<20, nil)
	for _, it := range want {
		q.push(it)
	}
	q.close()
	q = openTestQueue(t, dir, 1<<20, nil)
	defer q.close()
	got := drain(q)
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i].it
		// Times come back in the local zone: compare the instants.
		if !w.ev.Time.Equal(g.ev.Time) || !w.au.Time.Equal(g.au.Time) {
			t.Errorf("record %d time %v %v", i, g.ev.Time, g.au.Time)
		}
		w.ev.Time, g.ev.Time, w.au.Time, g.au.Time = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if w.sum != nil && g.sum != nil {
			if !w.sum.time.Equal(g.sum.time) {
				t.Errorf("summary time %v", g.sum.time)
			}
			ws, gs := *w.sum, *g.sum
			ws.time, gs.time = time.Time{}, time.Time{}
			w.sum, g.sum = &ws, &gs
		}
		if !reflect.DeepEqual(w, g) {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}
