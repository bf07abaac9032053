package sipedge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Registration timing: the first retry after a failure, its cap, the
// expiry asked for when none is configured, and the bound on one
// REGISTER exchange (a challenge included).
const (
	regBackoff     = 30 * time.Second
	regBackoffMax  = 10 * time.Minute
	regDefaultExp  = time.Hour
	regExchange    = 20 * time.Second
	unregisterWait = 5 * time.Second
)

// TrunkRegistration is one outbound registration the edge keeps alive at
// an ITSP. Password is the unsealed secret; it is never reported back.
type TrunkRegistration struct {
	Name      string
	Registrar string // host:port the REGISTER goes to
	Transport string // udp, tcp or tls
	Username  string
	Domain    string // the AOR's domain and the Request-URI
	Password  string
	Expires   time.Duration // asked for; 0: one hour
}

// Registration states.
const (
	RegRegistering = "registering" // first attempt under way
	RegRegistered  = "registered"
	RegFailed      = "failed" // last attempt failed; retried with backoff
)

// TrunkRegState is a registration as it stands now.
type TrunkRegState struct {
	Name, Registrar, Transport string
	State                      string
	LastError                  string
	Expires                    time.Time // registration valid until (registered only)
	LastSuccess                time.Time
}

// TrunkRegistrations keeps the edge's outbound registrations in line with
// a desired list (Set): new trunks start registering, removed ones are
// un-registered (REGISTER with Expires: 0) and stop, changed ones (host,
// credentials, expiry) are un-registered with the old settings and
// registered with the new. It is safe for concurrent use.
type TrunkRegistrations struct {
	s   *Server
	ctx context.Context // ends every registration (edgepbxd stopping)

	setMu sync.Mutex // one Set at a time; mu is not held while waiting
	mu    sync.Mutex
	regs  map[string]*registration
	wg    sync.WaitGroup
}

// TrunkRegistrations returns a registration manager whose registrations
// live until ctx ends (then they un-register).
func (s *Server) TrunkRegistrations(ctx context.Context) *TrunkRegistrations {
	return &TrunkRegistrations{s: s, ctx: ctx, regs: map[string]*registration{}}
}

type registration struct {
	cfg    TrunkRegistration
	cancel context.CancelFunc
	done   chan struct{}

	// Same Call-ID for every REGISTER of this binding, CSeq increasing
	// (RFC 3261 10.2), so the registrar updates rather than adds.
	callID string
	cseq   uint32

	mu sync.Mutex
	st TrunkRegState
}

func (r *registration) state() TrunkRegState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

func (r *registration) set(f func(*TrunkRegState)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.st)
}

// Validate checks a registration before it is started.
func (t TrunkRegistration) Validate() error {
	if t.Name == "" || len(t.Name) > 64 {
		return errors.New("sip: trunk registration without a name")
	}
	if _, _, err := net.SplitHostPort(t.Registrar); err != nil {
		return fmt.Errorf("sip: trunk %s: registrar %q: want host:port", t.Name, t.Registrar)
	}
	switch t.Transport {
	case "udp", "tcp", "tls":
	default:
		return fmt.Errorf("sip: trunk %s: transport %q", t.Name, t.Transport)
	}
	if t.Username == "" || t.Domain == "" || strings.ContainsAny(t.Username+t.Domain, " \t\r\n<>\";@:") {
		return fmt.Errorf("sip: trunk %s: username and domain required, without spaces or <>\";@:", t.Name)
	}
	if t.Expires < 0 || t.Expires > 24*time.Hour {
		return fmt.Errorf("sip: trunk %s: expiry out of range", t.Name)
	}
	return nil
}

// Set makes the running registrations those of list (names unique).
// Entries that do not validate are refused all together, and nothing
// changes. It returns once removed and changed registrations have been
// un-registered (bounded by a few seconds each).
func (m *TrunkRegistrations) Set(list []TrunkRegistration) error {
	want := map[string]TrunkRegistration{}
	for _, t := range list {
		if err := t.Validate(); err != nil {
			return err
		}
		if _, dup := want[t.Name]; dup {
			return fmt.Errorf("sip: trunk %s listed twice", t.Name)
		}
		if t.Expires == 0 {
			t.Expires = regDefaultExp
		}
		want[t.Name] = t
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()
	m.mu.Lock()
	var stopping []*registration
	for name, r := range m.regs {
		if t, ok := want[name]; !ok || t != r.cfg {
			r.cancel()
			stopping = append(stopping, r)
			delete(m.regs, name)
		}
	}
	m.mu.Unlock()
	for _, r := range stopping {
		<-r.done
	}
	if m.ctx.Err() != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, t := range want {
		if _, ok := m.regs[name]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		r := &registration{cfg: t, cancel: cancel, done: make(chan struct{}), callID: sip.GenerateTagN(24),
			st: TrunkRegState{Name: t.Name, Registrar: t.Registrar, Transport: t.Transport, State: RegRegistering}}
		// The edge's Close stops the registration too and waits for its
		// un-REGISTER before the sockets close.
		m.wg.Add(1)
		if !m.s.goBackground(func(bg context.Context) {
			defer m.wg.Done()
			defer close(r.done)
			stop := context.AfterFunc(bg, cancel)
			defer stop()
			m.s.keepRegistered(ctx, r)
		}) {
			m.wg.Done()
			cancel()
			return nil // the edge is closed
		}
		m.regs[name] = r
	}
	return nil
}

// States returns every registration's state, by name.
func (m *TrunkRegistrations) States() []TrunkRegState {
	m.mu.Lock()
	out := make([]TrunkRegState, 0, len(m.regs))
	for _, r := range m.regs {
		out = append(out, r.state())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b TrunkRegState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Wait returns when every registration has stopped (after ctx ended).
func (m *TrunkRegistrations) Wait() { m.wg.Wait() }

// keepRegistered registers r, refreshes at 80% of the granted expiry,
// retries with backoff on failure, and un-registers when ctx ends.
func (s *Server) keepRegistered(ctx context.Context, r *registration) {
	backoff := regBackoff
	registered := false
	for {
		granted, err := s.registerAt(ctx, r, r.cfg.Expires)
		if ctx.Err() != nil {
			// Stopped mid-exchange: the registrar may have bound the
			// contact all the same, so remove it.
			registered = true
			break
		}
		wait := granted * 8 / 10
		now := s.now()
		if err != nil {
			s.deps.Security.Record(logs.Event{Kind: logs.KindTrunkRegFail, User: r.cfg.Name, Reason: err.Error()})
			s.logger.Warn("sip: trunk registration failed", "trunk", r.cfg.Name, "err", err)
			r.set(func(st *TrunkRegState) { st.State, st.LastError, st.Expires = RegFailed, err.Error(), time.Time{} })
			wait = backoff
			backoff = min(backoff*2, regBackoffMax)
		} else {
			registered = true
			s.deps.Security.Record(logs.Event{Kind: logs.KindTrunkReg, User: r.cfg.Name, Reason: "expires " + granted.String()})
			r.set(func(st *TrunkRegState) {
				st.State, st.LastError, st.Expires, st.LastSuccess = RegRegistered, "", now.Add(granted), now
			})
			backoff = regBackoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
			continue
		}
		break
	}
	if registered {
		// The ITSP stops sending calls to a binding the box no longer
		// serves; ctx is over, so the un-REGISTER gets its own bound.
		uctx, cancel := context.WithTimeout(context.Background(), unregisterWait)
		defer cancel()
		if _, err := s.registerAt(uctx, r, 0); err != nil {
			s.logger.Warn("sip: trunk un-registration failed", "trunk", r.cfg.Name, "err", err)
		} else {
			s.logger.Info("sip: trunk un-registered", "trunk", r.cfg.Name)
		}
	}
}

// registerAt sends one REGISTER asking for expires (0: remove the binding),
// answering one digest challenge, and returns the expiry the ITSP granted.
func (s *Server) registerAt(ctx context.Context, r *registration, expires time.Duration) (time.Duration, error) {
	t := r.cfg
	ctx, cancel := context.WithTimeout(ctx, regExchange)
	defer cancel()
	aor := sip.Uri{Scheme: "sip", User: t.Username, Host: t.Domain}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: t.Domain})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(16)}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	callID := sip.CallIDHeader(r.callID)
	req.AppendHeader(&callID)
	r.cseq++
	req.AppendHeader(&sip.CSeqHeader{SeqNo: r.cseq, MethodName: sip.REGISTER})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+t.Username+"@"+s.contactHost(t.Transport)+";transport="+t.Transport+">"))
	req.AppendHeader(sip.NewHeader("Expires", secs(expires)))
	req.SetDestination(t.Registrar)
	req.SetTransport(strings.ToUpper(t.Transport))
	// The ITSP sees the REGISTER come from the port in its Contact (over
	// UDP the listener, not a new socket), which is where its INVITEs go
	// and what a NAT in front of the box keeps open.
	if err := s.onFlow(req); err != nil {
		return 0, fmt.Errorf("register %s: %w", t.Registrar, err)
	}
	res, err := answered(s.client.Do(ctx, req))
	if err != nil {
		return 0, fmt.Errorf("register %s: %w", t.Registrar, err)
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		// Answered here rather than by sipgo's DoDigestAuth, whose new
		// Via would name a wildcard listener's address.
		if err := authorizeRegister(req, res, t); err != nil {
			return 0, fmt.Errorf("register %s: %w", t.Registrar, err)
		}
		r.cseq++
		req.CSeq().SeqNo = r.cseq
		req.RemoveHeader("Via")
		if err := s.onFlow(req); err != nil {
			return 0, fmt.Errorf("register %s: %w", t.Registrar, err)
		}
		if res, err = answered(s.client.Do(ctx, req)); err != nil {
			return 0, fmt.Errorf("register %s with digest: %w", t.Registrar, err)
		}
	}
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("register %s: %d %s", t.Registrar, res.StatusCode, res.Reason)
	}
	if expires == 0 {
		return 0, nil
	}
	granted := expires
	if v := res.GetHeader("Expires"); v != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(v.Value())); err == nil && n >= 0 {
			granted = time.Duration(n) * time.Second
		}
	}
	for _, h := range res.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			if v, ok := c.Params.Get("expires"); ok {
				if n, err := strconv.Atoi(v); err == nil && n >= 0 {
					granted = time.Duration(n) * time.Second
				}
			}
		}
	}
	// A registrar granting next to nothing must not make the box refresh
	// in a tight loop.
	return max(granted, time.Minute), nil
}

// ErrNoAnswer is a client transaction that ended with neither a final
// answer nor an error.
var ErrNoAnswer = errors.New("transaction ended without an answer")

// answered turns sipgo's Do result into an answer or an error. Do returns
// (nil, nil) when its transaction is terminated from outside (the user
// agent closing while a request waits): Terminate closes Done before it
// records why, so Do sees Done with no error yet.
func answered(res *sip.Response, err error) (*sip.Response, error) {
	if err == nil && res == nil {
		return nil, ErrNoAnswer
	}
	return res, err
}

// maxRegChallenge bounds the ITSP's challenge header (untrusted input).
const maxRegChallenge = 2048

// authorizeRegister adds the answer to the ITSP's 401/407 challenge in
// res to req. The password is never logged or put in an error.
func authorizeRegister(req *sip.Request, res *sip.Response, t TrunkRegistration) error {
	chName, authName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, authName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return fmt.Errorf("%d without %s", res.StatusCode, chName)
	}
	if len(h.Value()) > maxRegChallenge {
		return errors.New(chName + " too long")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("%s: %w", chName, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	cred, err := digest.Digest(chal, digest.Options{Method: string(sip.REGISTER), URI: req.Recipient.Addr(),
		Username: t.Username, Password: t.Password})
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	req.RemoveHeader(authName)
	req.AppendHeader(sip.NewHeader(authName, cred.String()))
	return nil
}

// registerTrunk keeps a trunk of the startup SIP configuration registered
// (its password sealed in sip.trunks).
func (s *Server) registerTrunk(ctx context.Context, t pbxconfig.Trunk) {
	pw, err := trunkPassword(s.deps.Store, t.Name)
	if err != nil {
		s.logger.Warn("sip: trunk registration not started", "trunk", t.Name, "err", err)
		return
	}
	rg := t.Register
	r := &registration{cfg: TrunkRegistration{Name: t.Name, Registrar: rg.Registrar, Transport: rg.Transport,
		Username: rg.Username, Domain: rg.Domain, Password: pw, Expires: rg.Expires}, callID: sip.GenerateTagN(24)}
	s.keepRegistered(ctx, r)
}

func (s *Server) contactHost(transport string) string {
	if a := s.Addr(transport); a != nil {
		return a.String()
	}
	if a := s.Addr("udp"); a != nil {
		return a.String()
	}
	return "invalid"
}
