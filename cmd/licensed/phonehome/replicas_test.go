package phonehome_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// replicas are n licensed servers on one database of backend b (one
// store shared by all for bbolt, whose file admits one process).
func replicas(t *testing.T, b backend, n int, now func() time.Time) ([]*phonehome.Server, ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	db := b.newDB(t)
	var shared phonehome.Store
	var out []*phonehome.Server
	for range n {
		st := shared
		if st == nil || b.replicas {
			st = openStore(t, db)
			shared = st
		}
		s, err := phonehome.NewWithStore(st, priv, "tok", now, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out, pub
}

func cloneRequest(lic, hw string) *license.Request {
	return &license.Request{V: 1, Nonce: strings.Repeat("ab", 16), Serial: "S-" + hw, InstallID: "I-" + lic,
		Fingerprint: license.Fingerprint(hw), Firmware: "2.0.0", LicenceID: lic, Seq: 1}
}

// TestCloneRace: the two boxes of a cloned pair check in at the same
// moment, each through another replica. The licence is flagged, by
// exactly one of the two answers (the second one serialized), for every
// pair: never missed by two replicas each reading "no fingerprint yet".
func TestCloneRace(t *testing.T) {
	forEachBackend(t, testCloneRace)
}

func testCloneRace(t *testing.T, b backend) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	srv, _ := replicas(t, b, 2, func() time.Time { return now })
	const pairs = 40
	for i := range pairs {
		if err := srv[0].PutLicence(phonehome.Licence{ID: fmt.Sprintf("L%d", i), ValidUntil: now.AddDate(1, 0, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		clone bool
		err   error
	}
	res := make([][2]result, pairs)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range pairs {
		for box := range 2 {
			wg.Go(func() {
				<-start
				r, err := srv[box].Answer(cloneRequest(fmt.Sprintf("L%d", i), fmt.Sprintf("hw%d", box)), 100)
				res[i][box] = result{err == nil && r.Clone, err}
			})
		}
	}
	close(start)
	wg.Wait()
	for i := range pairs {
		id := fmt.Sprintf("L%d", i)
		for _, r := range res[i] {
			if r.err != nil {
				t.Fatalf("%s: %v", id, r.err)
			}
		}
		if n := btoi(res[i][0].clone) + btoi(res[i][1].clone); n != 1 {
			t.Errorf("%s: %d of the pair's answers say clone, want exactly 1", id, n)
		}
		l, ok, err := srv[1].GetLicence(id)
		if err != nil || !ok || !l.Clone || len(l.Fingerprints) != 2 {
			t.Errorf("%s: clone %v with fingerprints %v (%v)", id, l.Clone, l.Fingerprints, err)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDatabaseUnavailable: with its database unreachable licensed answers
// 503 "try later" with Retry-After and no signed body (a box keeps its
// grace and retries), and serves again once the database is back.
func TestDatabaseUnavailable(t *testing.T) {
	url := pg.DB(t)
	// A proxy the test can cut stands for the network to the database.
	hostport := strings.Split(strings.Split(url, "@")[1], "/")[0]
	p := newCutProxy(t, hostport)
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	proxied := strings.Replace(url, hostport, p.addr(), 1)
	s, err := phonehome.NewWithStore(openStore(t, proxied), priv, "tok", func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutLicence(phonehome.Licence{ID: "L1", ValidUntil: now.AddDate(1, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	post := func() *httptest.ResponseRecorder {
		body, _ := requestBody(cloneRequest("L1", "hw"))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", license.CheckinPath, strings.NewReader(body)))
		return rec
	}
	if rec := post(); rec.Code != http.StatusOK {
		t.Fatalf("check-in with the database up: %d %s", rec.Code, rec.Body)
	}
	p.cut(true)
	rec := post()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || strings.TrimSpace(rec.Body.String()) != "try later" {
		t.Fatalf("check-in with the database away: %d %q %q", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if _, err := license.ParseResponse(rec.Body.Bytes(), pub); err == nil {
		t.Fatal("a signed answer without the database")
	}
	p.cut(false)
	// The pool reconnects on the next request.
	if rec := post(); rec.Code != http.StatusOK {
		t.Fatalf("check-in with the database back: %d %s", rec.Code, rec.Body)
	}
	if c, err := s.Checkins("L1"); err != nil || len(c) != 2 {
		t.Fatalf("%d check-ins recorded, want 2 (%v)", len(c), err)
	}
}

func requestBody(r *license.Request) (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(r)
	return string(b), err
}

// cutProxy forwards TCP to target until cut: then it closes every
// connection and refuses new ones, like a database host gone away.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *cutProxy) serve(c net.Conn) {
	if !p.track(c) {
		return
	}
	u, err := (&net.Dialer{}).DialContext(context.Background(), "tcp", p.target)
	if err != nil || !p.track(u) {
		c.Close()
		return
	}
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}
