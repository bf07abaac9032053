package phonehome_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
)

// pinnedCache hands out whichever session the test chooses, so an old
// ticket can be presented again.
type pinnedCache struct {
	mu   sync.Mutex
	last *tls.ClientSessionState
	use  *tls.ClientSessionState
}

func (c *pinnedCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.use, c.use != nil
}

func (c *pinnedCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs != nil {
		c.last = cs
	}
}

// TestSessionTickets: licensed's tickets are 24-byte names of state it
// keeps, single use (a resumed handshake brings a fresh one), and worthless
// after seven days. On PostgreSQL the state is shared: a ticket one replica
// issued resumes on the other, once.
func TestSessionTickets(t *testing.T) {
	forEachBackend(t, testSessionTickets)
}

func testSessionTickets(t *testing.T, b backend) {
	db := b.newDB(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	cert, certPEM, err := phonehome.DevCertificate("127.0.0.1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	if len(leaf.IPAddresses) != 1 || len(leaf.Extensions) != 1 || leaf.IsCA || len(certPEM) == 0 {
		t.Fatalf("development certificate: %d IPs, %d extensions (want only the names), CA %v", len(leaf.IPAddresses), len(leaf.Extensions), leaf.IsCA)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	// serve runs licensed's TLS and returns its address.
	serve := func() string {
		s, err := phonehome.NewWithStore(openStore(t, db), priv, "", clock, nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := tls.Listen("tcp", "127.0.0.1:0", s.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// The ticket follows the handshake; one byte of data makes
				// the client read it.
				c.Write([]byte{1})
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close() })
		return ln.Addr().String()
	}
	cache := &pinnedCache{}
	dial := func(addr string) (resumed bool, ticket []byte) {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", ClientSessionCache: cache, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		cache.mu.Lock()
		ticket, _, err = cache.last.ResumptionState()
		cache.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().DidResume, ticket
	}

	// With replicas, every second handshake goes to the other one.
	addr := serve()
	other := addr
	if b.replicas {
		other = serve()
	}
	if resumed, ticket := dial(addr); resumed || len(ticket) != 24 {
		t.Fatalf("first handshake: resumed %v, ticket of %d bytes (want 24)", resumed, len(ticket))
	}
	first := cache.last
	cache.use = first
	if resumed, _ := dial(other); !resumed {
		t.Fatal("the ticket did not resume")
	}
	if resumed, _ := dial(addr); resumed {
		t.Fatal("a used ticket resumed again")
	}
	cache.use = cache.last
	if resumed, _ := dial(other); !resumed {
		t.Fatal("the fresh ticket from a resumed handshake did not resume")
	}
	// Eight days later the ticket is refused.
	cache.use = cache.last
	mu.Lock()
	now = now.Add(8 * 24 * time.Hour)
	mu.Unlock()
	if resumed, _ := dial(addr); resumed {
		t.Fatal("an eight-day-old ticket resumed")
	}
}
