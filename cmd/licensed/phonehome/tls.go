package phonehome

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"sync"
	"time"
)

// Session tickets are kept on the server and the ticket a box holds is
// only their 24-byte name: crypto/tls's self-contained tickets are about
// 110 bytes and travel twice a day per box (issued, then presented), which
// a check-in's 2 KB budget feels. The sessions live in the Store: in
// memory for bbolt (one process; a disk write per handshake would cost
// every check-in an fsync), in an UNLOGGED PostgreSQL table for replicas,
// so a ticket one replica issued resumes on any other. A lost record only
// costs one full handshake.
const (
	// sessionLife matches crypto/tls's longest ticket lifetime.
	sessionLife   = 7 * 24 * time.Hour
	ticketLen     = 8 + 16 // created (unix seconds, big-endian) + random
	maxSessionRaw = 8 << 10
	// maxSessions bounds memory (a few hundred bytes each); past it the
	// oldest go first.
	maxSessions = 1 << 18
)

// memSessions is the in-memory ticket store: a map for lookup and the
// names in order of creation for expiry.
type memSessions struct {
	mu    sync.Mutex
	state map[string][]byte
	order []string // oldest first; may name records already used
}

func (t *memSessions) Put(_ context.Context, id []byte, created time.Time, raw []byte) error {
	cutoff := created.Add(-sessionLife).Unix()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == nil {
		t.state = map[string][]byte{}
	}
	// Names sort by creation time: the expired ones are at the front.
	n := 0
	for n < len(t.order) && (int64(binary.BigEndian.Uint64([]byte(t.order[n]))) < cutoff || len(t.state) >= maxSessions) {
		delete(t.state, t.order[n])
		n++
	}
	t.order = append(t.order[n:], string(id))
	t.state[string(id)] = raw
	return nil
}

func (t *memSessions) Take(_ context.Context, id []byte, _ time.Time) ([]byte, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	raw, ok := t.state[string(id)]
	delete(t.state, string(id))
	return raw, ok, nil
}

// TLSConfig returns base with server-side session tickets (base is not
// modified). Tickets are single use: a resumed handshake gets a fresh one.
func (s *Server) TLSConfig(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	cfg.WrapSession = s.wrapSession
	cfg.UnwrapSession = s.unwrapSession
	return cfg
}

func (s *Server) wrapSession(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	raw, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	if len(raw) > maxSessionRaw {
		return nil, fmt.Errorf("licensed: session state of %d bytes", len(raw))
	}
	now := s.now()
	id := make([]byte, ticketLen)
	binary.BigEndian.PutUint64(id, uint64(now.Unix()))
	if _, err := rand.Read(id[8:]); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionTimeout)
	defer cancel()
	if err := s.store.Sessions().Put(ctx, id, now, raw); err != nil {
		// The handshake goes on: the box holds a name nothing answers to,
		// and its next check-in is a full handshake.
		s.log.Warn("licensed: keep TLS session", "err", err)
		s.metrics.sessions.WithLabelValues("store_error").Inc()
	} else {
		s.metrics.sessions.WithLabelValues("issued").Inc()
	}
	return id, nil
}

// unwrapSession finds the state a ticket names and forgets it. An unknown,
// expired or malformed ticket is not an error: the handshake goes on as a
// full one.
func (s *Server) unwrapSession(id []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(id) != ticketLen {
		return nil, nil
	}
	now := s.now()
	created := time.Unix(int64(binary.BigEndian.Uint64(id)), 0)
	if now.Sub(created) > sessionLife {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sessionTimeout)
	defer cancel()
	raw, ok, err := s.store.Sessions().Take(ctx, id, now.Add(-sessionLife))
	if err != nil {
		s.log.Warn("licensed: resume TLS session", "err", err)
		s.metrics.sessions.WithLabelValues("store_error").Inc()
		return nil, nil
	}
	if !ok {
		s.metrics.sessions.WithLabelValues("unknown").Inc()
		return nil, nil
	}
	s.metrics.sessions.WithLabelValues("resumed").Inc()
	st, err := tls.ParseSessionState(raw)
	if err != nil {
		return nil, nil
	}
	return st, nil
}

// DevCertificate makes a self-signed certificate for development and
// tests: one ECDSA P-256 leaf naming hosts (IP addresses or DNS names),
// with no extensions beyond the names, so the full handshake of a box's
// first check-in stays small. Boxes trust it by its own PEM (returned).
func DevCertificate(hosts ...string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "licensed"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() && !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(tmpl.IPAddresses)+len(tmpl.DNSNames) == 0 {
		return tls.Certificate{}, nil, errors.New("licensed: development certificate needs a host")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
