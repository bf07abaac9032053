package logs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// diskQueue is the syslog sender's durable spool: append-only segment
// files NNNNNNNNNNNNNNNN.seg (hex sequence number of the first record)
// of CRC-checked records, and a state file with the first unconfirmed
// sequence number, the audit follower's position and the drop counter.
//
// Producers only copy into a bounded in-memory batch (push never touches
// the disk); one writer goroutine writes the batch and fsyncs it, at most
// once per commit interval (group commit). A power cut loses at most what
// was pushed since the last completed fsync: one commit interval plus the
// fsync's own duration. A killed process (kill -9) loses only the batch not
// yet written. Records are read back by the sender from the files, so a
// restart resends exactly what was not confirmed.
//
// The size bound counts segment bytes: when a write would pass it, the
// oldest segment is removed and its unconfirmed records count as dropped.
type diskQueue struct {
	dir      string
	limit    int64 // bytes of all segments
	segLimit int64 // a segment is closed past this size
	every    time.Duration
	maxPend  int
	log      *slog.Logger
	onDrop   func(n uint64)
	notify   func()

	mu        sync.Mutex
	pending   []item // pushed, not yet written; pending[pstart:] are live
	pstart    int
	mark      uint64 // newest audit position handed in
	hasMark   bool
	ack       uint64 // first unconfirmed sequence number
	read      uint64 // next sequence number to hand out
	written   uint64 // records below are in segment files
	committed uint64 // records below were fsync'd
	segs      []segment
	bytes     int64
	dropped   uint64
	closed    bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	// Writer goroutine only.
	f        *os.File // active segment, nil until the first write
	batch    []item
	buf      []byte
	ends     []int
	state    *os.File
	saved    queueState
	reported uint64
	lastRep  time.Time

	// Reader (the sender's goroutine) only.
	rf    *os.File
	rbase uint64 // base of rf's segment
	rnext uint64 // sequence number at roff
	roff  int64
	rbuf  *bufio.Reader
	rrec  []byte
}

type segment struct {
	base  uint64 // sequence number of the first record
	count uint64 // records
	size  int64  // bytes of complete records
}

func (s segment) end() uint64 { return s.base + s.count }

// queueState is one slot of the state file. Two slots are written in
// turn (generation parity), each with its CRC, so a torn write leaves the
// previous one.
type queueState struct {
	gen     uint64
	ack     uint64
	mark    uint64
	hasMark bool
	dropped uint64
}

const (
	stateMagic = 0x45505851 // "EPXQ"
	stateSlot  = 64
	stateLen   = 4 + 4 + 8*4 + 1
)

func (s queueState) encode() []byte {
	b := make([]byte, 8, stateLen)
	b = binary.LittleEndian.AppendUint64(b, s.gen)
	b = binary.LittleEndian.AppendUint64(b, s.ack)
	b = binary.LittleEndian.AppendUint64(b, s.mark)
	b = binary.LittleEndian.AppendUint64(b, s.dropped)
	if s.hasMark {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	binary.LittleEndian.PutUint32(b, stateMagic)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:], crcTable))
	return b
}

func decodeState(b []byte) (queueState, bool) {
	if len(b) < stateLen || binary.LittleEndian.Uint32(b) != stateMagic ||
		binary.LittleEndian.Uint32(b[4:]) != crc32.Checksum(b[8:stateLen], crcTable) || b[stateLen-1] > 1 {
		return queueState{}, false
	}
	le := binary.LittleEndian
	return queueState{gen: le.Uint64(b[8:]), ack: le.Uint64(b[16:]), mark: le.Uint64(b[24:]), dropped: le.Uint64(b[32:]),
		hasMark: b[stateLen-1] == 1}, true
}

type diskQueueConfig struct {
	Dir         string
	LimitBytes  int64
	CommitEvery time.Duration
	MaxPending  int
	Logger      *slog.Logger
	OnDrop      func(n uint64)
	Written     func() // records were written and can be handed out
}

func segName(base uint64) string { return fmt.Sprintf("%016x.seg", base) }

// openDiskQueue opens (or creates) the queue in cfg.Dir and recovers it:
// every segment is scanned, a torn or corrupt tail is cut off, and the
// state file's confirmed position is clamped to what is on disk.
func openDiskQueue(cfg diskQueueConfig) (*diskQueue, error) {
	q := &diskQueue{dir: cfg.Dir, limit: cfg.LimitBytes, every: cfg.CommitEvery, maxPend: cfg.MaxPending, log: cfg.Logger,
		onDrop: cfg.OnDrop, notify: cfg.Written, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	q.segLimit = max(q.limit/8, 4<<10)
	if err := os.MkdirAll(q.dir, 0o700); err != nil {
		return nil, fmt.Errorf("syslog queue: %w", err)
	}
	var err error
	if q.state, err = os.OpenFile(filepath.Join(q.dir, "state"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("syslog queue: %w", err)
	}
	var st queueState
	for slot := range 2 {
		b := make([]byte, stateLen)
		if _, err := q.state.ReadAt(b, int64(slot*stateSlot)); err == nil {
			if s, ok := decodeState(b); ok && s.gen >= st.gen {
				st = s
			}
		}
	}
	q.saved = st
	if err := q.recover(st); err != nil {
		q.state.Close()
		return nil, err
	}
	go q.run()
	return q, nil
}

func (q *diskQueue) recover(st queueState) error {
	des, err := os.ReadDir(q.dir)
	if err != nil {
		return fmt.Errorf("syslog queue: %w", err)
	}
	for _, de := range des {
		name := de.Name()
		base, err := strconv.ParseUint(strings.TrimSuffix(name, ".seg"), 16, 64)
		if !strings.HasSuffix(name, ".seg") || len(name) != 20 || err != nil || !de.Type().IsRegular() {
			continue
		}
		q.segs = append(q.segs, segment{base: base})
	}
	slices.SortFunc(q.segs, func(a, b segment) int { return cmpU64(a.base, b.base) })
	kept := q.segs[:0]
	for i, s := range q.segs {
		path := filepath.Join(q.dir, segName(s.base))
		limit := uint64(1<<63 - 1)
		if i+1 < len(q.segs) {
			limit = q.segs[i+1].base // a segment never overlaps the next
		}
		count, size, fileSize, err := scanSegment(path, s.base, limit)
		if err != nil {
			return err
		}
		if size < fileSize {
			q.log.Warn("syslog queue: torn or corrupt tail cut off", "segment", path, "valid_records", count,
				"valid_bytes", size, "file_bytes", fileSize)
			if err := os.Truncate(path, size); err != nil {
				return fmt.Errorf("syslog queue: cut %s: %w", path, err)
			}
		}
		if count == 0 {
			os.Remove(path)
			continue
		}
		s.count, s.size = count, size
		kept = append(kept, s)
		q.bytes += size
	}
	q.segs = kept
	q.dropped = st.dropped
	q.mark, q.hasMark = st.mark, st.hasMark
	q.written = max(st.ack, 1)
	if n := len(q.segs); n > 0 {
		q.written = max(q.written, q.segs[n-1].end())
	}
	q.ack = min(max(st.ack, 1), q.written) // sequence numbers start at 1
	if len(q.segs) > 0 && q.ack < q.segs[0].base {
		q.ack = q.segs[0].base // the state lagged behind removed segments
	}
	// Gaps left by corrupt segment tails are lost records.
	for i := 0; i+1 < len(q.segs); i++ {
		if e, nb := q.segs[i].end(), q.segs[i+1].base; nb > e && nb > q.ack {
			q.dropped += nb - max(e, q.ack)
		}
	}
	q.read, q.committed = q.ack, q.written
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// scanSegment counts the valid records of a segment (sequence numbers
// from base, below limit) and the bytes they take.
func scanSegment(path string, base, limit uint64) (count uint64, size, fileSize int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("syslog queue: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("syslog queue: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var rec []byte
	for base+count < limit {
		var seq uint64
		var n int
		seq, _, n, rec, err = readRecord(r, rec)
		if err != nil || seq != base+count {
			break
		}
		count++
		size += int64(n)
	}
	return count, size, fi.Size(), nil
}

// readRecord reads and decodes one framed record; n is its size in bytes.
func readRecord(r *bufio.Reader, buf []byte) (seq uint64, it item, n int, _ []byte, err error) {
	h, err := r.Peek(recHeader)
	if err != nil {
		if errors.Is(err, io.EOF) && len(h) == 0 {
			return 0, item{}, 0, buf, io.EOF
		}
		return 0, item{}, 0, buf, fmt.Errorf("%w: short header", errRecord)
	}
	l, crc, err := recordLen(h)
	if err != nil {
		return 0, item{}, 0, buf, err
	}
	r.Discard(recHeader)
	buf = slices.Grow(buf[:0], l)[:l]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, item{}, 0, buf, fmt.Errorf("%w: short payload", errRecord)
	}
	seq, it, err = decodeRecord(buf, crc)
	return seq, it, recHeader + l, buf, err
}

func (q *diskQueue) push(it item) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if len(q.pending)-q.pstart >= q.maxPend {
		// The disk is behind by a whole batch: keep the newest.
		q.pending[q.pstart] = item{}
		q.pstart++
		q.dropped++
		if q.pstart >= q.maxPend {
			n := copy(q.pending, q.pending[q.pstart:])
			clear(q.pending[n:])
			q.pending, q.pstart = q.pending[:n], 0
		}
	}
	q.pending = append(q.pending, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *diskQueue) auditMark(seq uint64) {
	q.mu.Lock()
	q.mark, q.hasMark = seq, true
	q.mu.Unlock()
}

// resumeMark is the audit position of the last committed write (ok false:
// the queue never held one).
func (q *diskQueue) resumeMark() (uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.saved.mark, q.saved.hasMark
}

func (q *diskQueue) confirm(seq uint64) {
	q.mu.Lock()
	if seq+1 > q.ack {
		q.ack = min(seq+1, q.written)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *diskQueue) rewind() {
	q.mu.Lock()
	q.read = q.ack
	q.mu.Unlock()
}

func (q *diskQueue) reset() {
	q.mu.Lock()
	clear(q.pending)
	q.pending, q.pstart = q.pending[:0], 0
	q.ack, q.read = q.written, q.written
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *diskQueue) stats() spoolStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return spoolStats{queued: int(q.written-q.ack) + len(q.pending) - q.pstart, dropped: q.dropped, bytes: q.bytes,
		limitBytes: q.limit, durable: true}
}

// committedSeq is the sequence number below which everything is fsync'd.
func (q *diskQueue) committedSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.committed
}

// next hands out up to n records after the read cursor, from one segment.
func (q *diskQueue) next(buf []entry, n int) []entry {
	q.mu.Lock()
	if len(q.segs) > 0 && q.read < q.segs[0].base {
		q.read = q.segs[0].base
	}
	q.read = max(q.read, q.ack)
	from := q.read
	i, _ := slices.BinarySearchFunc(q.segs, from, func(s segment, v uint64) int { return cmpU64(s.base, v+1) })
	i-- // last segment with base <= from
	if i >= 0 && from >= q.segs[i].end() && i+1 < len(q.segs) {
		i++ // a gap: go on with the next segment
		from = q.segs[i].base
	}
	if i < 0 || from >= q.segs[i].end() || from >= q.written {
		q.mu.Unlock()
		return buf
	}
	seg := q.segs[i]
	to := min(seg.end(), q.written, from+uint64(n))
	q.mu.Unlock()

	got, err := q.readSeg(seg, from, to, &buf)
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil {
		// Corrupted under us (or removed by the bound): skip the rest of
		// the segment rather than resend forever.
		if !errors.Is(err, os.ErrNotExist) {
			q.log.Warn("syslog queue: unreadable records skipped", "segment", segName(seg.base), "from", from+got, "err", err)
			if to > from+got && from+got >= q.ack {
				q.dropped += seg.end() - (from + got)
			}
			q.read = max(q.read, seg.end())
			return buf
		}
	}
	q.read = max(q.read, from+got)
	return buf
}

func (q *diskQueue) readSeg(seg segment, from, to uint64, buf *[]entry) (uint64, error) {
	if q.rf == nil || q.rbase != seg.base || q.rnext > from {
		if q.rf != nil {
			q.rf.Close()
			q.rf = nil
		}
		f, err := os.Open(filepath.Join(q.dir, segName(seg.base)))
		if err != nil {
			return 0, err
		}
		q.rf, q.rbase, q.rnext, q.roff = f, seg.base, seg.base, 0
	}
	if q.rbuf == nil {
		q.rbuf = bufio.NewReaderSize(nil, 64<<10)
	}
	// Read only complete records: the writer appends beyond seg.size.
	q.rbuf.Reset(io.NewSectionReader(q.rf, q.roff, seg.size-q.roff))
	var got uint64
	for q.rnext < to {
		seq, it, n, rec, err := readRecord(q.rbuf, q.rrec)
		q.rrec = rec
		if err == nil && seq != q.rnext {
			err = fmt.Errorf("%w: sequence %d, want %d", errRecord, seq, q.rnext)
		}
		if err != nil {
			q.rf.Close()
			q.rf = nil
			return got, err
		}
		q.roff += int64(n)
		q.rnext++
		if seq >= from {
			*buf = append(*buf, entry{seq: seq, it: it})
			got++
		}
	}
	return got, nil
}

// run is the writer: group commit of pushed items, removal of confirmed
// segments, state updates.
func (q *diskQueue) run() {
	defer close(q.done)
	var last time.Time
	for {
		select {
		case <-q.wake:
		case <-q.stop:
			q.flush()
			return
		}
		if d := time.Until(last.Add(q.every)); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-q.stop:
				t.Stop()
				q.flush()
				return
			}
		}
		q.flush()
		last = time.Now()
	}
}

func (q *diskQueue) flush() {
	q.mu.Lock()
	// Swap, not copy: producers wait on this lock.
	clear(q.pending[:q.pstart])
	q.pending, q.batch = q.batch[:0], q.pending[q.pstart:]
	q.pstart = 0
	mark, hasMark := q.mark, q.hasMark
	seq := q.written
	q.mu.Unlock()

	ok := true
	if len(q.batch) > 0 {
		q.buf, q.ends = q.buf[:0], q.ends[:0]
		for i := range q.batch {
			q.buf = appendRecord(q.buf, seq+uint64(i), &q.batch[i])
			q.ends = append(q.ends, len(q.buf))
		}
		clear(q.batch)
		if err := q.write(seq); err != nil {
			// The disk failed: the batch is lost, say so loudly.
			q.log.Error("syslog queue: write failed; messages lost", "err", err, "messages", len(q.ends))
			q.mu.Lock()
			q.dropped += uint64(len(q.ends))
			q.mu.Unlock()
			ok = false
		} else if q.notify != nil {
			q.notify()
		}
	}
	q.mu.Lock()
	st := queueState{gen: q.saved.gen + 1, ack: q.ack, mark: q.saved.mark, hasMark: q.saved.hasMark, dropped: q.dropped}
	if ok {
		st.mark, st.hasMark = mark, hasMark
	}
	var gone []segment
	for len(q.segs) > 1 && q.segs[0].end() <= q.ack {
		gone = append(gone, q.segs[0])
		q.bytes -= q.segs[0].size
		q.segs = q.segs[1:]
	}
	newDrops := q.dropped - q.reported
	q.mu.Unlock()

	if st.ack != q.saved.ack || st.mark != q.saved.mark || st.hasMark != q.saved.hasMark || st.dropped != q.saved.dropped {
		// Written after the records' fsync, never synced itself: a lost
		// state update means an older position (duplicates, never loss).
		if _, err := q.state.WriteAt(st.encode(), int64(st.gen%2)*stateSlot); err != nil {
			q.log.Warn("syslog queue: state", "err", err)
		} else {
			q.mu.Lock()
			q.saved = st
			q.mu.Unlock()
		}
	}
	for _, s := range gone {
		os.Remove(filepath.Join(q.dir, segName(s.base)))
	}
	if newDrops > 0 && q.onDrop != nil && time.Since(q.lastRep) >= time.Minute {
		q.reported += newDrops
		q.lastRep = time.Now()
		q.onDrop(newDrops)
	}
}

// write appends the encoded batch (q.buf, record ends q.ends, first
// sequence number seq) to segments, enforcing the bound, then fsyncs.
func (q *diskQueue) write(seq uint64) error {
	start, i := 0, 0
	for i < len(q.ends) {
		if q.f == nil || q.activeSize() >= q.segLimit {
			if err := q.rotate(seq + uint64(i)); err != nil {
				return err
			}
		}
		// As many records as fit in the active segment (at least one).
		room := q.segLimit - q.activeSize()
		j := i + 1
		for j < len(q.ends) && int64(q.ends[j]-start) <= room {
			j++
		}
		chunk := q.buf[start:q.ends[j-1]]
		q.makeRoom(int64(len(chunk)))
		if _, err := q.f.Write(chunk); err != nil {
			return fmt.Errorf("syslog queue: write: %w", err)
		}
		q.mu.Lock()
		s := &q.segs[len(q.segs)-1]
		s.count += uint64(j - i)
		s.size += int64(len(chunk))
		q.bytes += int64(len(chunk))
		q.written = s.end()
		q.mu.Unlock()
		start, i = q.ends[j-1], j
	}
	if err := q.f.Sync(); err != nil {
		return fmt.Errorf("syslog queue: fsync: %w", err)
	}
	q.mu.Lock()
	q.committed = q.written
	q.mu.Unlock()
	return nil
}

func (q *diskQueue) activeSize() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.segs[len(q.segs)-1].size
}

// makeRoom removes the oldest segments (never the active one) until n
// more bytes fit the bound; their unconfirmed records count as dropped.
func (q *diskQueue) makeRoom(n int64) {
	for {
		q.mu.Lock()
		if q.bytes+n <= q.limit || len(q.segs) < 2 {
			q.mu.Unlock()
			return
		}
		s := q.segs[0]
		q.segs = q.segs[1:]
		q.bytes -= s.size
		if s.end() > q.ack {
			q.dropped += s.end() - max(s.base, q.ack)
		}
		q.ack = max(q.ack, q.segs[0].base)
		q.read = max(q.read, q.ack)
		q.mu.Unlock()
		os.Remove(filepath.Join(q.dir, segName(s.base)))
	}
}

// rotate closes the active segment and starts one at seq.
func (q *diskQueue) rotate(seq uint64) error {
	if q.f != nil {
		if err := q.f.Sync(); err != nil {
			return fmt.Errorf("syslog queue: fsync: %w", err)
		}
		q.f.Close()
		q.f = nil
	}
	f, err := os.OpenFile(filepath.Join(q.dir, segName(seq)), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("syslog queue: new segment: %w", err)
	}
	// The new file's name must survive a power cut with its records.
	if d, err := os.Open(q.dir); err == nil {
		d.Sync()
		d.Close()
	}
	q.f = f
	q.mu.Lock()
	q.segs = append(q.segs, segment{base: seq})
	q.mu.Unlock()
	return nil
}

// close writes what was pushed, saves the state durably and stops.
func (q *diskQueue) close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
	<-q.done
	err := q.state.Sync()
	q.state.Close()
	if q.f != nil {
		q.f.Close()
	}
	if q.rf != nil {
		q.rf.Close()
	}
	return err
}
