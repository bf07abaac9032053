package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome/pgtest"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// pg is the PostgreSQL server of this package's replica tests.
var pg pgtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	pg.Stop()
	os.Exit(code)
}

// fleet is a built licensed with a vendor key, one TLS certificate all
// its replicas serve, and an admin token.
type fleet struct {
	t                        testing.TB
	dir, bin                 string
	vendorKey, cert, certKey string
	tokenFile, token         string
	roots                    *x509.CertPool
	pub                      []byte
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir(), token: "fleet-admin-token"}
	f.bin = filepath.Join(f.dir, "licensed")
	if out, err := exec.Command("go", "build", "-o", f.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(f.bin, "keys", "-out", f.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("keys: %v\n%s", err, out)
	}
	pub, err := license.ParsePublicKey(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	f.pub, f.vendorKey = pub, filepath.Join(f.dir, "vendor.key")
	cert, certPEM, err := phonehome.DevCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	f.cert, f.certKey, f.tokenFile = filepath.Join(f.dir, "cert.pem"), filepath.Join(f.dir, "key.pem"), filepath.Join(f.dir, "token")
	for name, data := range map[string][]byte{f.cert: certPEM, f.certKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), f.tokenFile: []byte(f.token)} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	f.roots = x509.NewCertPool()
	f.roots.AddCert(leaf)
	return f
}

// replica is one running `licensed serve`.
type replica struct {
	addr string
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

func (f *fleet) serve(db string) *replica {
	f.t.Helper()
	r := &replica{log: &syncBuffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(f.bin, "serve", "-db", db, "-key", f.vendorKey, "-listen", "127.0.0.1:0",
		"-tls-cert", f.cert, "-tls-key", f.certKey, "-admin-token-file", f.tokenFile)
	r.cmd.Stderr = r.log
	stdout, _ := r.cmd.StdoutPipe()
	if err := r.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() { r.cmd.Wait(); close(r.done) }()
	f.t.Cleanup(func() { r.cmd.Process.Kill(); <-r.done })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		f.t.Fatalf("no listen line: %v\n%s", err, r.log)
	}
	go io.Copy(io.Discard, stdout)
	r.addr = strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(line, "licensed: listening on ")), "https://")
	return r
}

// admin calls a replica's admin API and decodes the JSON answer into out.
func (f *fleet) admin(r *replica, method, path, body string, out any) {
	f.t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}}, Timeout: 30 * time.Second}
	req, _ := http.NewRequest(method, "https://"+r.addr+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.token)
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("%s %s: %s %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			f.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

func (f *fleet) issue(r *replica, id string) {
	f.admin(r, "PUT", "/admin/licences/"+id, fmt.Sprintf(`{"valid_until":%q,"max_ext":10}`, time.Now().AddDate(1, 0, 0).Format(time.RFC3339)), nil)
}

// box is a real licence client (firmware/license) with its own store.
type box struct {
	m    *license.Manager
	head atomic.Uint64 // its audit log's head
}

func anchorAt(seq uint64) license.Anchor {
	a := license.Anchor{Seq: seq}
	h := sha256.Sum256(fmt.Appendf(nil, "entry %d", seq))
	copy(a.Hash[:], h[:])
	return a
}

func (f *fleet) newBox(lic, install, hw string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *box {
	f.t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(f.t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { db.Close() })
	b := &box{}
	b.m, err = license.New(license.Config{ServerURL: "https://127.0.0.1", DB: db, VendorKey: f.pub, RootCAs: f.roots,
		DialContext: dial, Timeout: 20 * time.Second,
		Identity: license.Identity{Serial: "EPX-" + hw, InstallID: install, Fingerprint: license.Fingerprint(hw),
			Firmware: "1.0.0", LicenceID: lic},
		AuditHead: func() (license.Anchor, error) { return anchorAt(b.head.Load()), nil },
		AuditAt: func(seq uint64) (license.Anchor, bool, error) {
			return anchorAt(seq), seq <= b.head.Load(), nil
		},
		Logger: nil})
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// to dials the first of addrs that answers, starting at addrs[0]: a load
// balancer that skips a dead replica.
func to(addrs ...string) func(ctx context.Context, network, _ string) (net.Conn, error) {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var err error
		for _, a := range addrs {
			var c net.Conn
			if c, err = (&net.Dialer{}).DialContext(ctx, network, a); err == nil {
				return c, nil
			}
		}
		return nil, err
	}
}

// TestReplicasCloneRace: two real licensed processes on one PostgreSQL;
// the two boxes of each cloned pair (same licence and disk, other
// hardware) check in at the same moment, one through each replica. Every
// licence ends flagged with both fingerprints, and exactly one "clone
// flagged" is logged for it across both replicas.
func TestReplicasCloneRace(t *testing.T) {
	db := pg.DB(t)
	f := newFleet(t)
	a, b := f.serve(db), f.serve(db)
	const pairs = 20
	var boxes [pairs][2]*box
	for i := range pairs {
		lic := fmt.Sprintf("L-%d", i)
		f.issue(a, lic)
		boxes[i][0] = f.newBox(lic, "I-"+lic, lic+"-hw0", to(a.addr))
		boxes[i][1] = f.newBox(lic, "I-"+lic, lic+"-hw1", to(b.addr))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 2*pairs)
	for i := range pairs {
		for _, bx := range boxes[i] {
			wg.Go(func() {
				<-start
				if _, err := bx.m.CheckNow(context.Background()); err != nil {
					errs <- err
				}
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("check-in: %v", err)
	}
	logs := a.log.String() + b.log.String()
	for i := range pairs {
		lic := fmt.Sprintf("L-%d", i)
		var l phonehome.Licence
		f.admin(b, "GET", "/admin/licences/"+lic, "", &l)
		if !l.Clone || len(l.Fingerprints) != 2 {
			t.Errorf("%s: clone %v, fingerprints %v", lic, l.Clone, l.Fingerprints)
		}
		if n := strings.Count(logs, `msg="clone flagged" licence=`+lic+" "); n != 1 {
			t.Errorf("%s: flagged %d times, want once", lic, n)
		}
	}
}

// TestReplicaResumes: a box's TLS session from one replica resumes on the
// other, and that check-in stays within the daily 2 KB.
func TestReplicaResumes(t *testing.T) {
	db := pg.DB(t)
	f := newFleet(t)
	a, b := f.serve(db), f.serve(db)
	f.issue(a, "L-R")
	var in, out atomic.Int64
	next := a.addr
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, next)
		if err != nil {
			return nil, err
		}
		return &countedConn{Conn: c, in: &in, out: &out}, nil
	}
	bx := f.newBox("L-R", "I-R", "hw-r", dial)
	// checkIn is one check-in through replica r and its bytes on the wire.
	checkIn := func(r *replica) int64 {
		t.Helper()
		next = r.addr
		in.Store(0)
		out.Store(0)
		bx.head.Add(1)
		if _, err := bx.m.CheckNow(context.Background()); err != nil {
			t.Fatal(err)
		}
		return in.Load() + out.Load()
	}
	full := checkIn(a)
	same := checkIn(a)  // resumed on the replica that issued the ticket
	other := checkIn(b) // the ticket A issued, presented to B
	t.Logf("check-in bytes: full handshake %d, resumed on the same replica %d, on the other replica %d", full, same, other)
	// A full handshake costs the certificate (hundreds of bytes) more.
	if other > 2048 || other > same+64 {
		t.Fatalf("check-in on the other replica: %d bytes, %d on the same one: not resumed, or over 2 KB", other, same)
	}
}

// TestReplicaKilled: boxes check in again and again through a load
// balancer over two replicas; one replica is killed (SIGKILL) mid-load.
// Every check-in that failed is followed by one that succeeds (on the
// survivor); afterwards no licence is flagged as a clone, no counter as a
// rollback, no audit log as rewritten, and every anchor a box got an
// answer for is kept.
func TestReplicaKilled(t *testing.T) {
	db := pg.DB(t)
	f := newFleet(t)
	a, b := f.serve(db), f.serve(db)
	const boxes, rounds = 16, 10
	bxs := make([]*box, boxes)
	for i := range boxes {
		lic := fmt.Sprintf("K-%d", i)
		f.issue(a, lic)
		addrs := []string{a.addr, b.addr}
		if i%2 == 1 {
			addrs = []string{b.addr, a.addr}
		}
		bxs[i] = f.newBox(lic, "I-"+lic, lic+"-hw", to(addrs...))
	}
	var done atomic.Int64
	var killOnce sync.Once
	results := make([][]error, boxes)
	acked := make([]uint64, boxes)
	var wg sync.WaitGroup
	for i, bx := range bxs {
		wg.Go(func() {
			for range rounds {
				bx.head.Add(1)
				_, err := bx.m.CheckNow(context.Background())
				results[i] = append(results[i], err)
				if err == nil {
					acked[i] = bx.head.Load()
				}
				if done.Add(1) == boxes*rounds/3 {
					killOnce.Do(func() { a.cmd.Process.Kill() })
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-a.done:
	default:
		t.Fatal("replica A still running")
	}
	failed := 0
	for i, res := range results {
		for j, err := range res {
			if err == nil {
				continue
			}
			failed++
			if j == len(res)-1 || res[j+1] != nil {
				t.Errorf("box %d: check-in %d failed (%v) and the retry did not succeed", i, j, err)
			}
		}
	}
	t.Logf("%d of %d check-ins failed when replica A was killed; each retry succeeded on B", failed, boxes*rounds)
	for i := range boxes {
		lic := fmt.Sprintf("K-%d", i)
		var l phonehome.Licence
		f.admin(b, "GET", "/admin/licences/"+lic, "", &l)
		if l.Clone {
			t.Errorf("%s: false clone flag: %s", lic, l.CloneReason)
		}
		var seqs []phonehome.SeqLog
		f.admin(b, "GET", "/admin/licences/"+lic+"/seqs", "", &seqs)
		if len(seqs) != 1 || seqs[0].Flag != nil {
			t.Errorf("%s: counters %+v", lic, seqs)
		}
		var anchors []phonehome.AnchorLog
		f.admin(b, "GET", "/admin/licences/"+lic+"/anchors", "", &anchors)
		if len(anchors) != 1 || anchors[0].Flag != nil {
			t.Fatalf("%s: anchors %+v", lic, anchors)
		}
		kept := map[uint64]string{}
		for _, an := range anchors[0].Anchors {
			kept[an.Seq] = an.Hash
		}
		if got := anchors[0].Anchors[len(anchors[0].Anchors)-1].Seq; got != acked[i] {
			t.Errorf("%s: newest anchor %d, the box's last answered check-in sent %d", lic, got, acked[i])
		}
		for j, err := range results[i] {
			seq := uint64(j + 1)
			if err == nil && kept[seq] != anchorAt(seq).HashHex() {
				t.Errorf("%s: anchor %d answered but not kept", lic, seq)
			}
		}
	}
}

type countedConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
