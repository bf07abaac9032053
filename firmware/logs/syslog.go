package logs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// AppName is the RFC 5424 APP-NAME of every message.
const AppName = "edgepbx"

// SD-IDs of the structured data. 32473 is the private enterprise number
// RFC 5612 reserves for documentation; collectors match on the name.
const (
	sdEvent  = "event@32473"
	sdAudit  = "audit@32473"
	sdReport = "report@32473"
)

// RFC 5424 severities.
const (
	sevCrit    = 2
	sevErr     = 3
	sevWarning = 4
	sevNotice  = 5
	sevInfo    = 6
)

// Facilities used with FacilityAuto.
const (
	facAuthpriv = 10
	facAudit    = 13
)

// maxMessage bounds one formatted message (fields are already clipped:
// events to 128 bytes, audit fields to 512).
const maxMessage = 8 << 10

// AuditRecord is what leaves the box of an audit entry: who, what, the
// outcome and where from, as stored (secrets were redacted before the
// entry was written; Before/After values are not sent), plus the entry's
// hash so a collector holds an off-box anchor of the chain.
type AuditRecord struct {
	Seq     uint64
	Time    time.Time
	Actor   string
	Source  string
	Action  string
	Target  string
	Outcome string
	Detail  string
	Hash    string
}

type itemKind uint8

const (
	itemEvent itemKind = iota
	itemAudit
	itemTest
	itemSummary
)

// SDParam is one structured-data parameter of a summary message. Names are
// the caller's constants; values are escaped like every other field.
type SDParam struct {
	Name, Value string
}

// summary is a periodic report (the daily intrusion summary).
type summary struct {
	time   time.Time
	msgid  string
	text   string
	params []SDParam
}

// item is one queued message, formatted only by the sender goroutine so
// producers pay for a copy, not for formatting.
type item struct {
	kind itemKind
	ev   Event
	au   AuditRecord
	sum  *summary
}

// SenderConfig are the sender's fixed parameters; zero values take defaults.
type SenderConfig struct {
	Hostname   string         // box serial or name ("-" if empty)
	QueueSize  int            // messages kept while the collector is away (default 4096)
	Roots      *x509.CertPool // trust anchors when the settings carry no CA (nil: system roots)
	MinBackoff time.Duration  // first reconnect delay (default 1 s)
	MaxBackoff time.Duration  // longest reconnect delay (default 60 s)
	// WriteTimeout bounds one write: a collector that stops reading costs
	// a reconnect, never a stuck sender (default 10 s).
	WriteTimeout time.Duration
	Logger       *slog.Logger

	// QueueDir, when set (OpenSender), keeps the queue on disk there
	// (edgepbxd: /data/logs/syslog-queue) instead of QueueSize messages
	// in memory; QueueBytes bounds it (default 64 MiB).
	QueueDir   string
	QueueBytes int64
	// CommitEvery is the group-commit interval of the disk queue: what was
	// queued in the last interval (plus one fsync) is what a power cut can
	// lose (default 100 ms).
	CommitEvery time.Duration
	// ConfirmAfter: a message leaves the queue once the collector's TCP
	// stack acknowledged its bytes and the connection then stayed up this
	// long (a collector dying with our bytes unread resets the connection
	// and they are sent again). Default 1 s.
	ConfirmAfter time.Duration
	// OnDrop is told, at most once a minute and never under a lock, how
	// many queued messages were dropped since it was last told (edgepbxd
	// records a security event).
	OnDrop func(n uint64)
}

// SyslogStatus is the sender's state for the admin UI.
type SyslogStatus struct {
	Enabled   bool   `json:"enabled"`
	Connected bool   `json:"connected"`
	Sent      uint64 `json:"sent"`      // written to a collector connection
	Confirmed uint64 `json:"confirmed"` // acknowledged by the collector's TCP and left the queue
	Dropped   uint64 `json:"dropped"`   // oldest messages dropped because the queue was full
	Queued    int    `json:"queued"`    // waiting or sent but not yet confirmed
	// Durable: the queue is on disk and survives restarts and power cuts
	// (QueueBytes of QueueLimitBytes in use).
	Durable         bool      `json:"durable"`
	QueueBytes      int64     `json:"queue_bytes"`
	QueueLimitBytes int64     `json:"queue_limit_bytes"`
	LastError       string    `json:"last_error,omitempty"`
	LastErrorAt     time.Time `json:"last_error_at,omitzero"`
}

// Sender forwards security events and audit entries to a remote syslog
// collector. Event and Audit never block: they copy into a bounded queue
// (on disk with OpenSender) that drops its oldest message only when full.
// Run owns the connection; a message leaves the queue only when the
// collector confirmed it (TLS/TCP) or it was written (UDP, best effort).
type Sender struct {
	cfg  SenderConfig
	host string
	on   atomic.Bool
	sp   spool
	disk *diskQueue // sp when the queue is on disk

	wake      chan struct{} // a message was queued
	applied   chan struct{} // settings changed: reconnect
	auditDrop atomic.Uint64 // audit entries not queued (catch-up past its bound)
	sent      atomic.Uint64
	confirmed atomic.Uint64

	setMu sync.Mutex
	set   SyslogSettings
	tlsc  *tls.Config

	stMu      sync.Mutex
	conn      net.Conn // the live connection, closed by Apply to switch at once
	connected bool
	lastErr   string
	lastErrAt time.Time
}

// NewSender returns a sender with an in-memory queue that is off until
// Apply enables it.
func NewSender(cfg SenderConfig) *Sender {
	cfg.QueueDir = ""
	s, _ := OpenSender(cfg)
	return s
}

// OpenSender returns a sender that is off until Apply enables it; with
// cfg.QueueDir its queue is on disk there, recovered from what an earlier
// run left (a torn tail is cut off). Close it after Run returned.
func OpenSender(cfg SenderConfig) (*Sender, error) {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 4096
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(60*time.Second, cfg.MinBackoff)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = 64 << 20
	}
	if cfg.CommitEvery <= 0 {
		cfg.CommitEvery = 100 * time.Millisecond
	}
	if cfg.ConfirmAfter <= 0 {
		cfg.ConfirmAfter = time.Second
	}
	s := &Sender{cfg: cfg, host: headerField(cfg.Hostname, 255),
		wake: make(chan struct{}, 1), applied: make(chan struct{}, 1), set: DefaultSyslogSettings()}
	if cfg.QueueDir == "" {
		s.sp = newMemSpool(cfg.QueueSize)
		return s, nil
	}
	q, err := openDiskQueue(diskQueueConfig{Dir: filepath.Clean(cfg.QueueDir), LimitBytes: cfg.QueueBytes,
		CommitEvery: cfg.CommitEvery, MaxPending: max(cfg.QueueSize, 4096), Logger: cfg.Logger, OnDrop: cfg.OnDrop,
		// Records are handed out once written: wake the sender then.
		Written: func() {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		return nil, err
	}
	s.sp, s.disk = q, q
	return s, nil
}

// Close flushes and closes the queue (after Run returned).
func (s *Sender) Close() error { return s.sp.close() }

// AuditResume returns the audit sequence number after which FollowAudit
// should go on: where the queue says the last run stopped, or head when
// there is no such position (first start, memory queue) or it lies beyond
// head (a restored store).
func (s *Sender) AuditResume(head uint64) uint64 {
	if s.disk == nil {
		return head
	}
	if m, ok := s.disk.resumeMark(); ok && m <= head {
		return m
	}
	return head
}

// Apply validates set and makes the running sender use it: it reconnects
// at once; disabling empties the queue.
func (s *Sender) Apply(set SyslogSettings) error {
	if err := set.Validate(); err != nil {
		return err
	}
	var tc *tls.Config
	if set.Transport == TransportTLS && set.Address != "" {
		var err error
		if tc, err = s.tlsConfig(set); err != nil {
			return err
		}
	}
	s.setMu.Lock()
	s.set, s.tlsc = set, tc
	s.setMu.Unlock()
	s.on.Store(set.Enabled)
	if !set.Enabled {
		s.sp.reset()
	}
	select {
	case s.applied <- struct{}{}:
	default:
	}
	// A write stuck on a slow collector ends now, not at its deadline.
	s.stMu.Lock()
	if s.conn != nil {
		s.conn.Close()
	}
	s.stMu.Unlock()
	return nil
}

func (s *Sender) tlsConfig(set SyslogSettings) (*tls.Config, error) {
	host, _, err := splitAddress(set.Address)
	if err != nil {
		return nil, err
	}
	roots := s.cfg.Roots
	if set.CAPEM != "" {
		if roots, err = caPool(set.CAPEM); err != nil {
			return nil, err
		}
	}
	// ServerName is checked against the certificate (DNS or IP SAN).
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host}, nil
}

func (s *Sender) current() (SyslogSettings, *tls.Config) {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	return s.set, s.tlsc
}

// Event queues a security event; it returns at once (SIP hot path).
func (s *Sender) Event(e Event) {
	if s.on.Load() {
		s.push(item{kind: itemEvent, ev: e})
	}
}

// Audit queues an audit entry; it returns at once.
func (s *Sender) Audit(a AuditRecord) {
	if s.on.Load() {
		s.push(item{kind: itemAudit, au: a})
	}
}

// Summary queues one report message (SD-ID report@32473, MSGID msgid)
// with params in order; it reports false when remote syslog is off, so
// the caller can try again later rather than count it as sent.
func (s *Sender) Summary(at time.Time, msgid, text string, params []SDParam) bool {
	if !s.on.Load() {
		return false
	}
	s.push(item{kind: itemSummary, sum: &summary{time: at, msgid: msgid, text: text, params: slices.Clone(params)}})
	return true
}

func (s *Sender) push(it item) {
	s.sp.push(it)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Status reports counters and the connection state.
func (s *Sender) Status() SyslogStatus {
	st := s.sp.stats()
	s.stMu.Lock()
	defer s.stMu.Unlock()
	return SyslogStatus{Enabled: s.on.Load(), Connected: s.connected, Sent: s.sent.Load(), Confirmed: s.confirmed.Load(),
		Dropped: st.dropped + s.auditDrop.Load(), Queued: st.queued, Durable: st.durable, QueueBytes: st.bytes,
		QueueLimitBytes: st.limitBytes, LastError: s.lastErr, LastErrorAt: s.lastErrAt}
}

func (s *Sender) setState(conn net.Conn, err error) {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	s.conn, s.connected = conn, conn != nil
	if err != nil {
		s.lastErr, s.lastErrAt = err.Error(), time.Now()
	}
}

// Run delivers queued messages until ctx ends, reconnecting with backoff.
// Whatever was sent on a connection but not confirmed when it ends is
// sent again on the next one.
func (s *Sender) Run(ctx context.Context) error {
	backoff := s.cfg.MinBackoff
	for {
		// The settings read next include every Apply signalled so far:
		// a stale signal would drop the new connection at once.
		select {
		case <-s.applied:
		default:
		}
		set, tc := s.current()
		if !set.Enabled {
			select {
			case <-ctx.Done():
				return nil
			case <-s.applied:
				continue
			}
		}
		conn, raw, err := s.dial(ctx, set, tc)
		if err == nil {
			s.setState(conn, nil)
			backoff = s.cfg.MinBackoff
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			err = s.pump(ctx, conn, raw)
			stop()
			conn.Close()
			s.sp.rewind()
			s.setState(nil, err)
		} else {
			s.setState(nil, err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil { // settings changed: reconnect now
			continue
		}
		s.cfg.Logger.Warn("syslog: collector unreachable", "address", set.Address, "transport", set.Transport, "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.applied:
			t.Stop()
			backoff = s.cfg.MinBackoff
		case <-t.C:
			backoff = min(backoff*2, s.cfg.MaxBackoff)
		}
	}
}

// countConn counts the bytes written to a TCP connection (TLS records
// included), to compare with what the peer acknowledged.
type countConn struct {
	*net.TCPConn
	n atomic.Uint64
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// acked is how many of the bytes written so far the peer's TCP has
// acknowledged: written minus what is still in the send queue.
func (c *countConn) acked() (uint64, error) {
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return 0, err
	}
	w := c.n.Load() // before the queue is read: never over-counts
	var outq int
	var ierr error
	if err := rc.Control(func(fd uintptr) { outq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	if ierr != nil {
		return 0, fmt.Errorf("syslog: send queue: %w", ierr)
	}
	if uint64(outq) > w {
		return 0, nil
	}
	return w - uint64(outq), nil
}

// dial connects; raw is the TCP connection under TLS/TCP (nil for UDP).
func (s *Sender) dial(ctx context.Context, set SyslogSettings, tc *tls.Config) (net.Conn, *countConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	switch set.Transport {
	case TransportTLS, TransportTCP:
		c, err := d.DialContext(ctx, "tcp", set.Address)
		if err != nil {
			return nil, nil, fmt.Errorf("syslog: %s %s: %w", set.Transport, set.Address, err)
		}
		if c.LocalAddr().String() == c.RemoteAddr().String() {
			// TCP simultaneous open: with no collector listening, a
			// loopback port in the ephemeral range can connect to itself,
			// and would "acknowledge" everything we send.
			c.Close()
			return nil, nil, fmt.Errorf("syslog: %s %s: connected to itself (no collector listening)", set.Transport, set.Address)
		}
		raw := &countConn{TCPConn: c.(*net.TCPConn)}
		if set.Transport == TransportTCP {
			return raw, raw, nil
		}
		tconn := tls.Client(raw, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("syslog: tls %s: %w", set.Address, err)
		}
		return tconn, raw, nil
	case TransportUDP:
		c, err := d.DialContext(ctx, "udp", set.Address)
		if err != nil {
			return nil, nil, fmt.Errorf("syslog: %s %s: %w", set.Transport, set.Address, err)
		}
		return c, nil, nil
	}
	return nil, nil, fmt.Errorf("syslog: transport %q: %w", set.Transport, ErrSyslogSettings)
}

// flight is a batch written to the connection and not yet confirmed.
type flight struct {
	last    uint64    // queue sequence number of its last message
	n       uint64    // messages in it
	end     uint64    // raw bytes written up to and including it
	ackedAt time.Time // when the peer's TCP had acknowledged them all
}

// pump writes batches until the connection fails, the settings change
// (nil) or ctx ends. raw == nil: UDP, best effort (a message is confirmed
// when written).
func (s *Sender) pump(ctx context.Context, conn net.Conn, raw *countConn) error {
	// A collector never talks back: reading tells us at once when it
	// closed or reset the connection, so we do not write into a dead
	// socket, and a reset means our unconfirmed bytes may be lost.
	dead := make(chan struct{})
	if raw != nil {
		go func() {
			defer close(dead)
			_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
		}()
	}
	var flights []flight
	// While batches wait for confirmation, look again this often.
	tick := time.NewTicker(max(s.cfg.ConfirmAfter/4, 5*time.Millisecond))
	defer tick.Stop()
	batch := make([]entry, 0, 64)
	var buf, msg []byte
	for {
		// A busy collector link still switches to new settings at once.
		select {
		case <-s.applied:
			return nil
		case <-dead:
			return errors.New("syslog: collector closed the connection")
		default:
		}
		if len(flights) > 0 {
			var err error
			if flights, err = s.confirmFlights(flights, raw); err != nil {
				return err
			}
		}
		batch = s.sp.next(batch[:0], cap(batch))
		if len(batch) == 0 {
			var tc <-chan time.Time
			if len(flights) > 0 {
				tc = tick.C
			}
			select {
			case <-ctx.Done():
				return nil
			case <-s.applied:
				return nil
			case <-dead:
				return errors.New("syslog: collector closed the connection")
			case <-s.wake:
			case <-tc:
			}
			continue
		}
		buf = buf[:0]
		fac := s.facility()
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		for i := range batch {
			msg = s.appendMessage(msg[:0], &batch[i].it, fac, time.Now())
			if raw != nil {
				buf = frame(buf, msg)
				continue
			}
			// RFC 5426: one message per datagram; UDP is best effort.
			if _, err := conn.Write(msg); err != nil {
				return fmt.Errorf("syslog: send: %w", err)
			}
			s.sent.Add(1)
			s.sp.confirm(batch[i].seq)
			s.confirmed.Add(1)
		}
		if raw != nil {
			if _, err := conn.Write(buf); err != nil {
				// Some of the batch may have arrived: it is sent again
				// on the next connection (at least once).
				return fmt.Errorf("syslog: send: %w", err)
			}
			s.sent.Add(uint64(len(batch)))
			flights = append(flights, flight{last: batch[len(batch)-1].seq, n: uint64(len(batch)), end: raw.n.Load()})
		}
		clear(batch)
	}
}

// confirmFlights removes from the queue the batches whose bytes the
// collector's TCP acknowledged at least ConfirmAfter ago on this still
// open connection. RFC 5425 has no application acknowledgement: this is
// the most a TLS/TCP sender can know.
func (s *Sender) confirmFlights(fl []flight, raw *countConn) ([]flight, error) {
	acked, err := raw.acked()
	if err != nil {
		return fl, err
	}
	now := time.Now()
	n := 0
	for i := range fl {
		f := &fl[i]
		if f.ackedAt.IsZero() && f.end <= acked {
			f.ackedAt = now
		}
		if f.ackedAt.IsZero() || now.Sub(f.ackedAt) < s.cfg.ConfirmAfter {
			break
		}
		n++
	}
	if n > 0 {
		s.sp.confirm(fl[n-1].last)
		for _, f := range fl[:n] {
			s.confirmed.Add(f.n)
		}
		fl = append(fl[:0], fl[n:]...)
	}
	// Mark later flights acknowledged too (their clock starts now).
	for i := range fl {
		if fl[i].ackedAt.IsZero() && fl[i].end <= acked {
			fl[i].ackedAt = now
		}
	}
	return fl, nil
}

func (s *Sender) facility() int {
	set, _ := s.current()
	if f, ok := facilities[set.Facility]; ok {
		return f
	}
	return -1 // auto
}

// Test sends one test message to the collector set names over a fresh
// connection and reports what went wrong (TLS verification included).
func (s *Sender) Test(ctx context.Context, set SyslogSettings) error {
	if err := set.Validate(); err != nil {
		return err
	}
	if set.Address == "" {
		return bad("address (host:port) is required")
	}
	var tc *tls.Config
	if set.Transport == TransportTLS {
		var err error
		if tc, err = s.tlsConfig(set); err != nil {
			return err
		}
	}
	conn, _, err := s.dial(ctx, set, tc)
	if err != nil {
		return err
	}
	defer conn.Close()
	fac := -1
	if f, ok := facilities[set.Facility]; ok {
		fac = f
	}
	it := item{kind: itemTest}
	b := s.appendMessage(nil, &it, fac, time.Now())
	if set.Transport != TransportUDP {
		b = frame(nil, b)
	}
	conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("syslog: send test message: %w", err)
	}
	return nil
}

// frame appends msg with RFC 5425 / RFC 6587 octet-counting framing:
// "MSG-LEN SP SYSLOG-MSG".
func frame(buf, msg []byte) []byte {
	buf = strconv.AppendInt(buf, int64(len(msg)), 10)
	buf = append(buf, ' ')
	return append(buf, msg...)
}
