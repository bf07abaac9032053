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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
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
}

// SyslogStatus is the sender's state for the admin UI.
type SyslogStatus struct {
	Enabled     bool      `json:"enabled"`
	Connected   bool      `json:"connected"`
	Sent        uint64    `json:"sent"`
	Dropped     uint64    `json:"dropped"` // oldest messages dropped because the queue was full
	Queued      int       `json:"queued"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Sender forwards security events and audit entries to a remote syslog
// collector. Event and Audit never block: they copy into a bounded queue
// that drops its oldest message when full. Run owns the connection.
type Sender struct {
	cfg  SenderConfig
	host string
	on   atomic.Bool

	mu    sync.Mutex
	q     []item // ring
	qHead int
	qLen  int

	wake    chan struct{} // a message was queued
	applied chan struct{} // settings changed: reconnect
	dropped atomic.Uint64
	sent    atomic.Uint64

	setMu sync.Mutex
	set   SyslogSettings
	tlsc  *tls.Config

	stMu      sync.Mutex
	conn      net.Conn // the live connection, closed by Apply to switch at once
	connected bool
	lastErr   string
	lastErrAt time.Time
}

// NewSender returns a sender that is off until Apply enables it.
func NewSender(cfg SenderConfig) *Sender {
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
	return &Sender{cfg: cfg, host: headerField(cfg.Hostname, 255), q: make([]item, cfg.QueueSize),
		wake: make(chan struct{}, 1), applied: make(chan struct{}, 1), set: DefaultSyslogSettings()}
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
		s.mu.Lock()
		clear(s.q)
		s.qHead, s.qLen = 0, 0
		s.mu.Unlock()
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
	s.mu.Lock()
	if s.qLen == len(s.q) {
		// Full: the newest events matter most during an attack.
		s.q[s.qHead] = item{}
		s.qHead = (s.qHead + 1) % len(s.q)
		s.qLen--
		s.dropped.Add(1)
	}
	s.q[(s.qHead+s.qLen)%len(s.q)] = it
	s.qLen++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take pops up to n items into buf.
func (s *Sender) take(buf []item, n int) []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ; n > 0 && s.qLen > 0; n-- {
		buf = append(buf, s.q[s.qHead])
		s.q[s.qHead] = item{}
		s.qHead = (s.qHead + 1) % len(s.q)
		s.qLen--
	}
	return buf
}

// unget puts items that failed to go out back at the front, as far as
// there is room; the rest count as dropped.
func (s *Sender) unget(items []item) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on.Load() {
		return // disabled meanwhile: the queue was emptied on purpose
	}
	for i := len(items) - 1; i >= 0; i-- {
		if s.qLen == len(s.q) {
			s.dropped.Add(uint64(i + 1))
			return
		}
		s.qHead = (s.qHead - 1 + len(s.q)) % len(s.q)
		s.q[s.qHead] = items[i]
		s.qLen++
	}
}

// Status reports counters and the connection state.
func (s *Sender) Status() SyslogStatus {
	s.mu.Lock()
	n := s.qLen
	s.mu.Unlock()
	s.stMu.Lock()
	defer s.stMu.Unlock()
	return SyslogStatus{Enabled: s.on.Load(), Connected: s.connected, Sent: s.sent.Load(), Dropped: s.dropped.Load(),
		Queued: n, LastError: s.lastErr, LastErrorAt: s.lastErrAt}
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
func (s *Sender) Run(ctx context.Context) error {
	backoff := s.cfg.MinBackoff
	for {
		set, tc := s.current()
		if !set.Enabled {
			select {
			case <-ctx.Done():
				return nil
			case <-s.applied:
				continue
			}
		}
		conn, err := s.dial(ctx, set, tc)
		if err == nil {
			s.setState(conn, nil)
			backoff = s.cfg.MinBackoff
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			err = s.pump(ctx, conn, set.Transport == TransportUDP)
			stop()
			conn.Close()
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

func (s *Sender) dial(ctx context.Context, set SyslogSettings, tc *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	switch set.Transport {
	case TransportTLS:
		d := tls.Dialer{Config: tc}
		c, err := d.DialContext(ctx, "tcp", set.Address)
		if err != nil {
			return nil, fmt.Errorf("syslog: tls %s: %w", set.Address, err)
		}
		return c, nil
	case TransportTCP, TransportUDP:
		var d net.Dialer
		c, err := d.DialContext(ctx, set.Transport, set.Address)
		if err != nil {
			return nil, fmt.Errorf("syslog: %s %s: %w", set.Transport, set.Address, err)
		}
		return c, nil
	}
	return nil, fmt.Errorf("syslog: transport %q: %w", set.Transport, ErrSyslogSettings)
}

// pump writes batches until the connection fails, the settings change
// (nil) or ctx ends.
func (s *Sender) pump(ctx context.Context, conn net.Conn, udp bool) error {
	// A collector never talks back: reading tells us at once when it
	// closed the connection, so we do not write into a dead socket.
	dead := make(chan struct{})
	if !udp {
		go func() {
			defer close(dead)
			_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
		}()
	}
	batch := make([]item, 0, 64)
	var buf, msg []byte
	for {
		// A busy collector link still switches to new settings at once.
		select {
		case <-s.applied:
			return nil
		default:
		}
		batch = s.take(batch[:0], cap(batch))
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.applied:
				return nil
			case <-dead:
				return errors.New("syslog: collector closed the connection")
			case <-s.wake:
				continue
			}
		}
		buf = buf[:0]
		fac := s.facility()
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		for i := range batch {
			msg = s.appendMessage(msg[:0], &batch[i], fac, time.Now())
			if !udp {
				buf = frame(buf, msg)
				continue
			}
			// RFC 5426: one message per datagram.
			if _, err := conn.Write(msg); err != nil {
				s.unget(batch[i:])
				return fmt.Errorf("syslog: send: %w", err)
			}
			s.sent.Add(1)
		}
		if !udp {
			if _, err := conn.Write(buf); err != nil {
				// Some of the batch may have arrived: it is sent again
				// on the next connection (at least once).
				s.unget(batch)
				return fmt.Errorf("syslog: send: %w", err)
			}
			s.sent.Add(uint64(len(batch)))
		}
		clear(batch)
	}
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
	conn, err := s.dial(ctx, set, tc)
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
