package license

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Offline policy. Failed check-ins are ignored for Grace since the last good
// one; admins are warned from WarnAfter.
const (
	Grace     = 14 * 24 * time.Hour
	WarnAfter = 7 * 24 * time.Hour
	// CertWarnBefore: the daily check warns when the certificate in use
	// expires sooner than this.
	CertWarnBefore = 21 * 24 * time.Hour
	// persistEvery bounds how much offline time a power cut can lose.
	persistEvery = 10 * time.Minute
	retryFirst   = 15 * time.Minute
	retryMax     = 4 * time.Hour
	stateBucket  = "license.state"
	schedBucket  = "license.schedule"
	stateAD      = "license/state"
)

// Identity is who the box is. Fingerprint is a hash of hardware identity
// (see Fingerprint), never raw serial numbers of parts.
type Identity struct {
	Serial      string
	InstallID   string
	Fingerprint string
	Firmware    string
	LicenceID   string
}

// Fingerprint hashes hardware identity strings (DMI product UUID, board
// serial, MACs, ...) into the hex value sent as the hardware fingerprint.
func Fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Schedule says when the daily check runs. The zero value is a random time of
// day chosen once per box and persisted, so a fleet does not call at once.
type Schedule struct {
	Fixed   bool
	Hour    int // 0..23, box-local time, when Fixed
	Minute  int // 0..59, when Fixed
	Weekday int // with Fixed: -1 = every day, 0..6 = Sunday..Saturday only
}

// Config is everything a Manager needs; the daemon fills it from the store
// and the boot identity.
type Config struct {
	ServerURL string // https://licence.vendor.example
	Identity  Identity
	DB        *store.DB
	// VendorKey verifies responses; nil means BuiltinVendorKey().
	VendorKey ed25519.PublicKey
	Clock     Clock // nil: SystemClock
	Schedule  Schedule
	// RootCAs for the server's TLS certificate; nil: system roots.
	RootCAs *x509.CertPool
	// Proxy is an optional HTTP proxy used with CONNECT, e.g.
	// http://user:pass@proxy.lan:3128 (credentials go in Proxy-Authorization).
	Proxy *url.URL
	// DialContext overrides the TCP dialer (tests count bytes with it).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Timeout     time.Duration // per check-in; default 30 s
	// Health returns the load summary and counts for the request.
	Health func() (Load, Counts)
	// CertNotAfter returns the expiry of the TLS certificate the box serves
	// (e.g. certs.Manager.Current().NotAfter); the daily check reports it and
	// warns CertWarnBefore ahead. nil or a zero time: not checked.
	CertNotAfter func() time.Time
	// AuditHead returns the audit chain head to anchor with the vendor
	// (AnchorFromHead of audit.Log.Head). nil: no anchor is sent; an error
	// leaves the anchor out of that check-in only.
	AuditHead func() (Anchor, error)
	// RestoredFrom returns the serial of another box whose backup was
	// restored here ("" if none); nil: never sent.
	RestoredFrom func() string
	// AuditAt returns entry seq of the audit log as an Anchor (found false:
	// no such entry). With it, each check-in also re-sends the entry the
	// last good check-in anchored, as the log holds it now. nil: not sent.
	AuditAt func(seq uint64) (a Anchor, found bool, err error)
	// Claimed reports whether the box has been claimed (auth.IsClaimed). A
	// claimed box without a licence state record had one deleted: that is
	// tampering, not a first start. nil: not consulted.
	Claimed func() (bool, error)
	// EmergencyNumbers are always allowed; nil means DefaultEmergencyNumbers.
	EmergencyNumbers []string
	// Floors keeps the offline counter, the check-in sequence and the
	// server-time floor where restoring an older /data cannot rewind them
	// (PID 1's TPM NV). nil: only the sealed record in the store.
	Floors Floors
	// OnChange is called (without locks held) after every check-in and when
	// the mode or reasons change, e.g. to raise banners, audit and security
	// log events.
	OnChange func(State)
	Logger   *slog.Logger
}

// persisted is the sealed record in license.state/state.
type persisted struct {
	// Elapsed is time offline since the last good check-in. It only grows
	// (clock steps backwards add nothing) and is reset only by a good check-in.
	Elapsed     time.Duration `json:"elapsed"`
	LastTick    time.Time     `json:"last_tick"`
	Floor       time.Time     `json:"floor"` // newest signed server time seen
	LastGood    time.Time     `json:"last_good"`
	LastAttempt time.Time     `json:"last_attempt"`
	LastError   string        `json:"last_error,omitempty"`
	Failures    int           `json:"failures"`
	Envelope    []byte        `json:"envelope,omitempty"` // last good signed response
	// Anchored is the audit sequence number the last good check-in sent
	// (its re-check rides along with the next ones).
	Anchored uint64 `json:"anchored,omitempty"`
	// Seq counts check-in attempts; it is persisted before each request
	// leaves, so the licence server, which remembers the highest one it
	// saw from this box, can tell a rolled-back state (a lower or equal
	// number) from a live one.
	Seq uint64 `json:"seq,omitempty"`
	// Tampered is set when the state record was missing on a box that had
	// one, or unreadable; it degrades service until a good check-in.
	Tampered string `json:"tampered,omitempty"`
	// Rollback is the licence server's verdict that this state is older
	// than one it saw (RollbackReason); a warning until the vendor clears it.
	Rollback string `json:"rollback,omitempty"`
	// Run is the offline time ever counted (never reset) and GoodRun its
	// value at the last good check-in: Elapsed is at least Run - GoodRun.
	// Both only grow, so they can live in monotonic floors.
	Run     time.Duration `json:"run,omitempty"`
	GoodRun time.Duration `json:"good_run,omitempty"`
}

// Manager runs the daily check-in and answers feature-gate queries.
type Manager struct {
	cfg    Config
	pub    ed25519.PublicKey
	clock  Clock
	log    *slog.Logger
	client *httpClient

	checkMu sync.Mutex // one check-in at a time

	mu       sync.Mutex
	st       persisted
	resp     *Response // verified payload of st.Envelope
	offset   time.Duration
	next     time.Time
	lastSeen stateKey
	wake     chan struct{}
	// savedElapsed is Elapsed as last persisted; State persists again once
	// the counter has moved on by persistEvery, even without Run.
	savedElapsed time.Duration
	// floorsMu serialises raises; raised is what the floors hold as far as
	// this manager knows (equal raises are not sent: each is an NV write).
	floorsMu sync.Mutex
	raised   map[string]uint64
}

// New loads the persisted state and prepares the transport. It does not
// touch the network.
func New(cfg Config) (*Manager, error) {
	if cfg.DB == nil {
		return nil, errors.New("license: no store")
	}
	u, err := url.Parse(cfg.ServerURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("license: server URL %q must be https://host", cfg.ServerURL)
	}
	id := cfg.Identity
	probe := Request{V: ProtocolVersion, Nonce: hex.EncodeToString(make([]byte, NonceBytes)),
		Serial: id.Serial, InstallID: id.InstallID, Fingerprint: id.Fingerprint, Firmware: id.Firmware, LicenceID: id.LicenceID}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("license: identity: %w", err)
	}
	if err := cfg.Schedule.validate(); err != nil {
		return nil, err
	}
	pub := cfg.VendorKey
	if pub == nil {
		if pub, err = BuiltinVendorKey(); err != nil {
			return nil, err
		}
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("license: vendor key has wrong size")
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.EmergencyNumbers == nil {
		cfg.EmergencyNumbers = DefaultEmergencyNumbers
	}
	m := &Manager{cfg: cfg, pub: pub, clock: cfg.Clock, log: cfg.Logger.With("pkg", "license"),
		client: newHTTPClient(cfg), wake: make(chan struct{}, 1)}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (s Schedule) validate() error {
	if !s.Fixed {
		return nil
	}
	if s.Hour < 0 || s.Hour > 23 || s.Minute < 0 || s.Minute > 59 || s.Weekday < -1 || s.Weekday > 6 {
		return fmt.Errorf("license: schedule %02d:%02d weekday %d invalid", s.Hour, s.Minute, s.Weekday)
	}
	return nil
}

func (m *Manager) load() error {
	now := m.clock.Now()
	var sealed []byte
	var offset int64
	var haveState, haveOffset bool
	err := m.cfg.DB.View(func(tx *store.Tx) error {
		var err error
		if haveState, err = tx.Get(stateBucket, "state", &sealed); err != nil {
			return err
		}
		haveOffset, err = tx.Get(schedBucket, "offset", &offset)
		return err
	})
	if err != nil {
		return fmt.Errorf("license: load state: %w", err)
	}
	if haveState {
		pt, err := m.cfg.DB.Unseal(sealed, stateAD)
		if err != nil {
			// A record we cannot open is treated like tampering: keep the
			// time already lost by starting at the grace limit, not at zero.
			m.log.Error("licence state unreadable; starting at end of grace", "err", err)
			m.st = tamperedState(now, "licence state record unreadable (wrong key or corrupted)")
		} else if err := json.Unmarshal(pt, &m.st); err != nil {
			m.log.Error("licence state undecodable; starting at end of grace", "err", err)
			m.st = tamperedState(now, "licence state record undecodable")
		}
		if len(m.st.Envelope) > 0 {
			resp, err := ParseResponse(m.st.Envelope, m.pub)
			if err != nil {
				m.log.Warn("stored licence response no longer verifies; dropped", "err", err)
				m.st.Envelope = nil
			} else {
				m.resp = resp
			}
		}
	} else if why, err := m.evidenceOfPastLife(haveOffset); err != nil {
		return err
	} else if why != "" {
		// The record is gone although this box had one: deleted, or an
		// older copy of the database restored. Not a first start.
		m.log.Error("licence state record missing on a box that had one; treated as tampering", "evidence", why)
		m.st = tamperedState(now, "licence state record missing although "+why)
	} else {
		// First start: the box has Grace to make its first check-in.
		m.st = persisted{LastTick: now}
	}
	if !haveOffset {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("license: random schedule: %w", err)
		}
		offset = int64(binary.BigEndian.Uint64(b[:]) % uint64(24*time.Hour/time.Second))
		if err := m.cfg.DB.Update(func(tx *store.Tx) error { return tx.Put(schedBucket, "offset", offset) }); err != nil {
			return fmt.Errorf("license: save schedule: %w", err)
		}
	}
	m.offset = time.Duration(offset) * time.Second
	if err := m.applyFloors(); err != nil {
		// PID 1 unreachable: the store's record is all there is this boot.
		m.log.Error("licence floors unreadable; using the stored state only", "err", err)
	}
	m.mu.Lock()
	m.advanceLocked(now)
	if m.st.LastAttempt.IsZero() || now.Sub(m.st.LastAttempt) >= 24*time.Hour || now.Before(m.st.LastAttempt) {
		m.next = now // overdue: check as soon as Run starts
	} else {
		m.next = m.nextSlot(m.st.LastAttempt)
	}
	m.lastSeen = m.stateLocked(now).key()
	m.mu.Unlock()
	return m.persist()
}

// tamperedState starts at the end of grace with the reason shown until a
// good check-in.
func tamperedState(now time.Time, why string) persisted {
	return persisted{Elapsed: Grace, LastTick: now, Tampered: why}
}

// evidenceOfPastLife says why a box without a state record is not new: the
// schedule record written with the first state, or a claim. "" when there
// is none (a fresh box).
func (m *Manager) evidenceOfPastLife(haveOffset bool) (string, error) {
	if haveOffset {
		return "this database held licence state before (its check-in schedule is still there)", nil
	}
	if m.cfg.Claimed == nil {
		return "", nil
	}
	claimed, err := m.cfg.Claimed()
	if err != nil {
		return "", fmt.Errorf("license: claim state: %w", err)
	}
	if claimed {
		return "the box is claimed", nil
	}
	return "", nil
}

// advanceLocked adds the wall time since the last tick to the offline
// counter. A clock stepped backwards adds nothing and subtracts nothing; the
// last signed server time gives a lower bound (now - last good check-in) that
// also covers time spent powered off.
func (m *Manager) advanceLocked(now time.Time) {
	if d := now.Sub(m.st.LastTick); d > 0 {
		m.st.Elapsed += d
		m.st.Run += d
	}
	m.st.LastTick = now
	if !m.st.LastGood.IsZero() {
		if d := now.Round(0).Sub(m.st.LastGood); d > m.st.Elapsed {
			m.st.Elapsed = d
		}
	}
}

func (m *Manager) persist() error {
	m.mu.Lock()
	pt, err := json.Marshal(m.st)
	m.savedElapsed = m.st.Elapsed
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("license: encode state: %w", err)
	}
	sealed, err := m.cfg.DB.Seal(pt, stateAD)
	if err != nil {
		return fmt.Errorf("license: seal state: %w", err)
	}
	if err := m.cfg.DB.Update(func(tx *store.Tx) error { return tx.Put(stateBucket, "state", sealed) }); err != nil {
		return fmt.Errorf("license: save state: %w", err)
	}
	return nil
}

// nextSlot is the first scheduled time strictly after t.
func (m *Manager) nextSlot(t time.Time) time.Time {
	t = t.Round(0)
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	var at time.Duration
	if m.cfg.Schedule.Fixed {
		at = time.Duration(m.cfg.Schedule.Hour)*time.Hour + time.Duration(m.cfg.Schedule.Minute)*time.Minute
	} else {
		at = m.offset
	}
	for i := 0; i < 9; i++ {
		d := day.AddDate(0, 0, i)
		c := d.Add(at)
		if !c.After(t) {
			continue
		}
		if m.cfg.Schedule.Fixed && m.cfg.Schedule.Weekday >= 0 && int(d.Weekday()) != m.cfg.Schedule.Weekday {
			continue
		}
		return c
	}
	return t.Add(24 * time.Hour) // unreachable with a valid schedule
}

// Run performs the scheduled check-ins until ctx ends. It also persists the
// offline counter every few minutes and reports mode changes via OnChange.
func (m *Manager) Run(ctx context.Context) error {
	for {
		now := m.clock.Now()
		m.mu.Lock()
		m.advanceLocked(now)
		due := !now.Before(m.next)
		wait := m.next.Sub(now)
		m.mu.Unlock()
		if due {
			if _, err := m.check(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("licence check-in failed", "err", err)
			}
			continue
		}
		if err := m.persist(); err != nil {
			m.log.Error("persist licence state", "err", err)
		}
		m.raiseFloors(ctx, false)
		m.notifyIfChanged()
		if wait > persistEvery {
			wait = persistEvery
		}
		select {
		case <-ctx.Done():
			return m.persist()
		case <-m.clock.After(wait):
		case <-m.wake:
		}
	}
}

// CheckNow performs one check-in immediately (the "check now" button and
// API). A failure changes nothing but the failure counter and schedules a
// retry with backoff.
func (m *Manager) CheckNow(ctx context.Context) (State, error) {
	st, err := m.check(ctx)
	select { // let Run pick up the new schedule
	case m.wake <- struct{}{}:
	default:
	}
	return st, err
}

func (m *Manager) check(ctx context.Context) (State, error) {
	m.checkMu.Lock()
	defer m.checkMu.Unlock()
	err := m.checkIn(ctx)
	now := m.clock.Now()
	m.mu.Lock()
	m.advanceLocked(now)
	m.st.LastAttempt = now
	if err != nil {
		m.st.Failures++
		m.st.LastError = err.Error()
		backoff := retryFirst << min(m.st.Failures-1, 10)
		m.next = now.Add(min(backoff, retryMax))
	} else {
		m.st.Failures = 0
		m.st.LastError = ""
		m.next = m.nextSlot(now)
	}
	m.mu.Unlock()
	if perr := m.persist(); perr != nil && err == nil {
		err = perr
	}
	m.raiseFloors(ctx, err == nil)
	st := m.State()
	m.notify(st)
	return st, err
}

func (m *Manager) checkIn(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	// The counter is on disk before the request leaves: any number the
	// server has seen was once this box's state, so seeing it again (or a
	// lower one) means the state went backwards.
	m.mu.Lock()
	m.st.Seq++
	m.mu.Unlock()
	if err := m.persist(); err != nil {
		return err
	}
	m.raiseFloors(ctx, false)
	req, err := m.buildRequest()
	if err != nil {
		return err
	}
	raw, err := m.client.post(ctx, m.cfg.ServerURL, req)
	if err != nil {
		return err
	}
	resp, err := ParseResponse(raw, m.pub)
	if err != nil {
		return err
	}
	if resp.Nonce != req.Nonce {
		return ErrReplay
	}
	id := m.cfg.Identity
	if resp.Serial != id.Serial || resp.InstallID != id.InstallID || resp.LicenceID != id.LicenceID {
		return ErrWrongBox
	}
	server := unixTime(resp.ServerTime)
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.advanceLocked(now)
	m.resp = resp
	m.st.Envelope = raw
	if req.Audit != "" && !resp.AuditRollback {
		if a, err := ParseAnchor(req.Audit); err == nil {
			m.st.Anchored = a.Seq
		}
	}
	m.st.Elapsed = 0
	m.st.GoodRun = m.st.Run
	m.st.LastTick = now
	m.st.LastGood = server
	m.st.Tampered = ""
	if resp.LastSeq > m.st.Seq {
		m.st.Seq = resp.LastSeq // resynchronise after a restore the server has judged
	}
	m.st.Rollback = ""
	if resp.StateRollback {
		m.st.Rollback = resp.RollbackReason
		if m.st.Rollback == "" {
			m.st.Rollback = "the licence server saw a newer state of this box"
		}
		m.log.Warn("licence server: licence state rolled back", "reason", m.st.Rollback, "seq", req.Seq, "server_seq", resp.LastSeq)
	}
	if server.After(m.st.Floor) {
		m.st.Floor = server
	}
	m.log.Info("licence check-in good", "status", resp.Status, "clone", resp.Clone, "advisories", len(resp.Advisories))
	if resp.AuditRollback {
		m.log.Warn("licence server: audit chain anchor mismatch", "seq", resp.AuditSeq, "reason", resp.AuditReason)
	}
	return nil
}

func (m *Manager) buildRequest() (*Request, error) {
	nonce := make([]byte, NonceBytes)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("license: nonce: %w", err)
	}
	id := m.cfg.Identity
	now := m.clock.Now()
	r := &Request{V: ProtocolVersion, Nonce: hex.EncodeToString(nonce), Serial: id.Serial,
		InstallID: id.InstallID, Fingerprint: id.Fingerprint, Firmware: id.Firmware,
		LicenceID: id.LicenceID, ClientTime: now.Unix()}
	m.mu.Lock()
	r.Seq = m.st.Seq
	m.mu.Unlock()
	if m.cfg.Health != nil {
		r.Load, r.Counts = m.cfg.Health()
	}
	if m.cfg.CertNotAfter != nil {
		if na := m.cfg.CertNotAfter(); !na.IsZero() && na.Year() < 2200 {
			r.CertNotAfter = na.Unix()
		}
	}
	if m.cfg.RestoredFrom != nil {
		r.RestoredFrom = m.cfg.RestoredFrom()
	}
	if m.cfg.AuditHead != nil {
		if a, err := m.cfg.AuditHead(); err != nil {
			m.log.Warn("audit head not anchored in this check-in", "err", err)
		} else {
			r.Audit = a.String()
			r.AuditPrev = m.auditPrev(a.Seq)
		}
	}
	m.mu.Lock()
	m.advanceLocked(now)
	r.OfflineDays = int(m.st.Elapsed / (24 * time.Hour))
	m.mu.Unlock()
	return r, nil
}

// auditPrev is the wire form of the entry the last good check-in
// anchored, as the log holds it now, when the head has moved past it; ""
// otherwise. A missing entry is sent with a zero hash: it cannot match.
func (m *Manager) auditPrev(head uint64) string {
	m.mu.Lock()
	prev := m.st.Anchored
	m.mu.Unlock()
	if m.cfg.AuditAt == nil || prev == 0 || prev >= head {
		return ""
	}
	a, found, err := m.cfg.AuditAt(prev)
	if err != nil {
		m.log.Warn("audit: anchored entry not re-checked in this check-in", "seq", prev, "err", err)
		return ""
	}
	if !found {
		a = Anchor{Seq: prev}
	}
	return a.String()
}

func (m *Manager) notifyIfChanged() {
	st := m.State()
	m.mu.Lock()
	changed := st.key() != m.lastSeen
	m.mu.Unlock()
	if changed {
		m.notify(st)
	}
}

func (m *Manager) notify(st State) {
	m.mu.Lock()
	old := m.lastSeen
	m.lastSeen = st.key()
	m.mu.Unlock()
	if old != st.key() {
		level := slog.LevelWarn
		if st.Mode == ModeFull {
			level = slog.LevelInfo
		}
		m.log.Log(context.Background(), level, "licence mode changed", "mode", st.Mode, "reasons", st.reasonCodes(), "days_offline", st.DaysOffline)
	}
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(st)
	}
}

// DefaultEmergencyNumbers are dialable in every mode.
var DefaultEmergencyNumbers = []string{"112", "911", "999", "000", "110", "118", "119", "15", "17", "18", "100", "101", "102", "108", "933", "995", "997"}

// isEmergency compares the dialled digits (ignoring spaces, dashes, dots and
// parentheses) with the configured list.
func (m *Manager) isEmergency(number string) bool {
	b := make([]byte, 0, len(number))
	for i := 0; i < len(number); i++ {
		switch c := number[i]; c {
		case ' ', '-', '.', '(', ')':
		default:
			b = append(b, c)
		}
	}
	return slices.Contains(m.cfg.EmergencyNumbers, string(b))
}
