package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
	"github.com/edgepbx/edgepbx/init/strictjson"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Firewall is what the control socket may ask of the firewall (netfw).
type Firewall interface {
	OpenPinhole(fwspec.Pinhole) error
	ClosePinhole(fwspec.Pinhole) error
	Ban(fwspec.Ban) error
	Unban(netip.Prefix) error
	ListBans() ([]fwspec.Ban, error)
	Counters() (fwspec.Counters, error)
}

// DHCPFirewall opens UDP 67 for the phones' DHCP server
// (*netfw.Firewall); it checks the interface against the policy itself.
type DHCPFirewall interface {
	SetDHCPServer(fwspec.DHCPServer) error
}

// Policy is the admin-editable firewall policy in PID 1 (*netfw.Committer):
// changes apply as pending and revert unless confirmed.
type Policy interface {
	State() fwspec.PolicyState
	Set(a fwspec.Access, adminSources []netip.Addr) (fwspec.Pending, error)
	Confirm(id string) error
}

// Network is the admin-editable network in PID 1 (*netconf.Committer):
// changes apply as pending and revert unless confirmed. Set validates
// every field itself against the board's interfaces.
type Network interface {
	State() netspec.State
	Set(netspec.Network) (netspec.Pending, error)
	Confirm(id string) error
}

// Clock is PID 1's time configuration (NTP servers, time zone).
type Clock interface {
	State() netspec.TimeState
	Set(netspec.Time) error
}

// System is PID 1's side of health and power requests. Reboot and Poweroff
// must only start the orderly shutdown and return; the reply goes out first.
type System interface {
	Health(Health)
	Reboot() error
	Poweroff() error
}

// Config configures a Server. Zero limits take the defaults below.
type Config struct {
	Path string
	// UID is edgepbxd's uid: with root, the only peer allowed.
	UID uint32
	// GID owns the socket (mode 0660) so edgepbxd can connect.
	GID      uint32
	Firewall Firewall // nil: firewall requests get an error reply
	// DHCP admits DHCP requests on a phones interface (*netfw.Firewall);
	// nil: DHCPServer requests get an error reply.
	DHCP    DHCPFirewall
	Policy  Policy  // nil: policy requests get an error reply
	Network Network // nil: network requests get an error reply
	Clock   Clock   // nil: time requests get an error reply
	Floors  Floors  // nil: floor requests get an error reply
	Updater Updater // nil: update requests get an error reply
	Reset   Reset   // nil: factory reset requests get an error reply
	System  System
	Log     *slog.Logger

	IdleTimeout  time.Duration // waiting for the next header
	FrameTimeout time.Duration // header to end of payload, and for the reply
	MaxConns     int
	ConnRate     float64 // requests per second per connection
	ConnBurst    int
	GlobalRate   float64
	GlobalBurst  int
	// PolicyRate bounds SetPolicy and ConfirmPolicy together: each
	// SetPolicy rebuilds the whole ruleset.
	PolicyRate  float64
	PolicyBurst int
	// BanRate bounds Ban and Unban together: each rewrites the persisted
	// ban file (fsync'd, up to MaxBans entries), so the global request rate
	// would otherwise turn into hundreds of file rewrites a second.
	BanRate  float64
	BanBurst int
	// FloorRate bounds floor raises (each is a TPM NV write).
	FloorRate  float64
	FloorBurst int
}

func (c *Config) defaults() {
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = 5 * time.Second
	}
	if c.MaxConns == 0 {
		c.MaxConns = 8
	}
	if c.ConnRate == 0 {
		c.ConnRate, c.ConnBurst = 50, 100
	}
	if c.GlobalRate == 0 {
		c.GlobalRate, c.GlobalBurst = 200, 400
	}
	if c.PolicyRate == 0 {
		c.PolicyRate, c.PolicyBurst = 0.5, 5
	}
	if c.BanRate == 0 {
		c.BanRate, c.BanBurst = 20, 200
	}
	if c.FloorRate == 0 {
		c.FloorRate, c.FloorBurst = 1.0/600, 16
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Server serves the control socket.
type Server struct {
	cfg    Config
	ln     *net.UnixListener
	global *bucket
	policy *bucket
	dhcp   *bucket
	bans   *bucket
	floors *bucket
	sem    chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// Listen creates the socket at cfg.Path (replacing a stale one), owned by
// root:cfg.GID with mode 0660.
func Listen(cfg Config) (*Server, error) {
	cfg.defaults()
	if cfg.System == nil {
		return nil, errors.New("control: System is required")
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if err := os.Remove(cfg.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control: remove stale socket: %w", err)
	}
	// Create it private, then open it to the group: no window where others can connect.
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", cfg.Path, err)
	}
	if err := os.Chown(cfg.Path, 0, int(cfg.GID)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chown socket: %w", err)
	}
	if err := os.Chmod(cfg.Path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control: chmod socket: %w", err)
	}
	return &Server{
		cfg:    cfg,
		ln:     ln,
		global: newBucket(cfg.GlobalRate, cfg.GlobalBurst, time.Now),
		policy: newBucket(cfg.PolicyRate, cfg.PolicyBurst, time.Now),
		// DHCP port requests have their own budget at the policy's rate, so
		// they never eat the admin's policy changes.
		dhcp:   newBucket(cfg.PolicyRate, cfg.PolicyBurst, time.Now),
		bans:   newBucket(cfg.BanRate, cfg.BanBurst, time.Now),
		floors: newBucket(cfg.FloorRate, cfg.FloorBurst, time.Now),
		sem:    make(chan struct{}, cfg.MaxConns),
		conns:  make(map[net.Conn]struct{}),
	}, nil
}

// Serve accepts connections until ctx is done or the server is closed.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return nil
			}
			s.cfg.Log.Warn("control: accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			s.cfg.Log.Warn("control: too many connections")
			c.Close()
			continue
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveConn(ctx, c)
		}()
	}
}

// Close stops accepting and closes every connection.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	return err
}

// PeerCred returns the peer's credentials of a unix connection.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, serr
}

func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	cred, err := PeerCred(c)
	if err != nil || (cred.Uid != 0 && cred.Uid != s.cfg.UID) {
		// No reply: a stranger learns nothing about the protocol.
		s.cfg.Log.Warn("control: peer rejected", "cred", cred, "err", err)
		return
	}
	log := s.cfg.Log.With("peer_pid", cred.Pid, "peer_uid", cred.Uid)
	perConn := newBucket(s.cfg.ConnRate, s.cfg.ConnBurst, time.Now)
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		var hb [HeaderLen]byte
		if _, err := io.ReadFull(c, hb[:]); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(s.cfg.FrameTimeout))
		h, err := ParseHeader(hb)
		if err != nil {
			// The stream cannot be re-synchronised: reply, then close.
			log.Warn("control: bad frame", "err", err)
			s.reply(c, Reply{Error: err.Error()})
			return
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		var r Reply
		if !perConn.allow() || !s.global.allow() {
			r = Reply{Error: "control: rate limited"}
		} else if h.Type == TypeInstallUpdate {
			// The rest of the connection is the bundle: reply and close.
			r = s.serveInstall(ctx, c, payload)
			if r.Error != "" {
				log.Warn("control: update refused", "reason", r.Reason, "field", r.Field, "err", r.Error)
			}
			s.reply(c, r)
			return
		} else {
			r = s.dispatch(h.Type, payload)
		}
		if r.Error != "" {
			log.Warn("control: request failed", "type", h.Type, "err", r.Error)
		}
		if err := s.reply(c, r); err != nil {
			return
		}
	}
}

func (s *Server) reply(c net.Conn, r Reply) error {
	p, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if len(p) > MaxReplyPayload {
		p, _ = json.Marshal(Reply{Error: "control: reply too large"})
	}
	c.SetWriteDeadline(time.Now().Add(s.cfg.FrameTimeout))
	return WriteFrame(c, TypeReply, p)
}

func ok(data any) Reply {
	if data == nil {
		return Reply{OK: true}
	}
	p, err := json.Marshal(data)
	if err != nil {
		return Reply{Error: err.Error()}
	}
	return Reply{OK: true, Data: p}
}

// fail answers a refusal; a field error or a decoding error names its field.
func fail(err error) Reply {
	r := Reply{Error: err.Error()}
	var fe *fwspec.FieldError
	var ne *netspec.FieldError
	var de *strictjson.Error
	var be *bundle.Error
	switch {
	case errors.As(err, &be):
		r.Field, r.Reason = be.Field, string(be.Reason)
	case errors.As(err, &fe):
		r.Field = fe.Field
	case errors.As(err, &ne):
		r.Field = ne.Field
	case errors.As(err, &de):
		r.Field = de.Field
	}
	return r
}

// errBansRate answers bans and unbans over Config.BanRate.
var errBansRate = errors.New("control: bans rate limited")

// errNoFirewall answers firewall requests when PID 1 runs without one.
var errNoFirewall = errors.New("control: firewall not available")

func (s *Server) dispatch(t Type, p []byte) Reply {
	fw := s.cfg.Firewall
	needFW := func() error {
		if fw == nil {
			return errNoFirewall
		}
		return nil
	}
	switch t {
	case TypeHealth:
		var h Health
		if err := decodeStrict(p, &h); err != nil {
			return fail(err)
		}
		if err := h.validate(); err != nil {
			return fail(err)
		}
		s.cfg.System.Health(h)
		return ok(nil)
	case TypeReboot, TypePoweroff:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		var err error
		if t == TypeReboot {
			err = s.cfg.System.Reboot()
		} else {
			err = s.cfg.System.Poweroff()
		}
		if err != nil {
			return fail(err)
		}
		return ok(nil)
	case TypeOpenPinhole, TypeClosePinhole:
		var ph fwspec.Pinhole
		if err := decodeStrict(p, &ph); err != nil {
			return fail(err)
		}
		ph, err := checkPinhole(ph)
		if err != nil {
			return fail(err)
		}
		if err := needFW(); err != nil {
			return fail(err)
		}
		if t == TypeOpenPinhole {
			err = fw.OpenPinhole(ph)
		} else {
			err = fw.ClosePinhole(ph)
		}
		if err != nil {
			return fail(err)
		}
		return ok(nil)
	case TypeBan:
		var b fwspec.Ban
		if err := decodeStrict(p, &b); err != nil {
			return fail(err)
		}
		b, err := checkBan(b)
		if err != nil {
			return fail(err)
		}
		if err := needFW(); err != nil {
			return fail(err)
		}
		if s.bans != nil && !s.bans.allow() {
			return fail(errBansRate)
		}
		if err := fw.Ban(b); err != nil {
			return fail(err)
		}
		return ok(nil)
	case TypeUnban:
		var u UnbanRequest
		if err := decodeStrict(p, &u); err != nil {
			return fail(err)
		}
		pfx, err := checkUnban(u)
		if err != nil {
			return fail(err)
		}
		if err := needFW(); err != nil {
			return fail(err)
		}
		if s.bans != nil && !s.bans.allow() {
			return fail(errBansRate)
		}
		if err := fw.Unban(pfx); err != nil {
			return fail(err)
		}
		return ok(nil)
	case TypeListBans, TypeCounters:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		if err := needFW(); err != nil {
			return fail(err)
		}
		if t == TypeListBans {
			bans, err := fw.ListBans()
			if err != nil {
				return fail(err)
			}
			return ok(BanList{Bans: bans})
		}
		c, err := fw.Counters()
		if err != nil {
			return fail(err)
		}
		return ok(c)
	case TypeGetPolicy, TypeSetPolicy, TypeConfirmPolicy:
		return s.dispatchPolicy(t, p)
	case TypeGetNetwork, TypeSetNetwork, TypeConfirmNetwork, TypeGetTime, TypeSetTime:
		return s.dispatchNetwork(t, p)
	case TypeGetFloors, TypeRaiseFloor:
		return s.dispatchFloors(t, p)
	case TypeUpdateStatus:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		if s.cfg.Updater == nil {
			return fail(errNoUpdater)
		}
		return ok(s.cfg.Updater.Status())
	case TypeFactoryResetBegin, TypeFactoryResetConfirm:
		return s.dispatchReset(t, p)
	case TypeDHCPServer:
		var r fwspec.DHCPServer
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.Validate(); err != nil {
			return fail(err)
		}
		if s.cfg.DHCP == nil {
			return fail(errNoFirewall)
		}
		if s.dhcp != nil && !s.dhcp.allow() {
			return fail(errors.New("control: DHCP server requests rate limited"))
		}
		if err := s.cfg.DHCP.SetDHCPServer(r); err != nil {
			return fail(err)
		}
		return ok(nil)
	}
	return fail(fmt.Errorf("control: unknown request type %d", uint8(t)))
}

// errNoPolicy answers policy requests when PID 1 runs without a committer.
var errNoPolicy = errors.New("control: firewall policy not available")

func (s *Server) dispatchPolicy(t Type, p []byte) Reply {
	pol := s.cfg.Policy
	switch t {
	case TypeGetPolicy:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		if pol == nil {
			return fail(errNoPolicy)
		}
		return ok(pol.State())
	case TypeSetPolicy:
		var r SetPolicyRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		src, err := r.validate()
		if err != nil {
			return fail(err)
		}
		if pol == nil {
			return fail(errNoPolicy)
		}
		if s.policy != nil && !s.policy.allow() {
			return fail(errors.New("control: policy changes rate limited"))
		}
		pend, err := pol.Set(r.Access, []netip.Addr{src})
		if err != nil {
			return fail(err)
		}
		return ok(pend)
	default: // TypeConfirmPolicy
		var r ConfirmPolicyRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.validate(); err != nil {
			return fail(err)
		}
		if pol == nil {
			return fail(errNoPolicy)
		}
		if s.policy != nil && !s.policy.allow() {
			return fail(errors.New("control: policy changes rate limited"))
		}
		if err := pol.Confirm(r.ID); err != nil {
			return fail(err)
		}
		return ok(nil)
	}
}
