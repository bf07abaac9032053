package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/qemu"
	"github.com/emiago/sipgo"
)

// powerCuts is how many times TestX86PowerCuts pulls the plug; the issue
// asks for at least 50. EDGEPBX_POWER_CUTS lowers it for a quick local run.
func powerCuts(t *testing.T) int {
	n := 50
	if v := os.Getenv("EDGEPBX_POWER_CUTS"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 1 || m > 500 {
			t.Fatalf("EDGEPBX_POWER_CUTS=%q: want 1..500", v)
		}
		n = m
	}
	return n
}

// cutClient is an API client that reports instead of failing the test, so
// writer goroutines can run into the power cut.
type cutClient struct {
	base, token string
	c           *http.Client
}

func newCutClient(base, fingerprint, token string) *cutClient {
	want := normFingerprint(fingerprint)
	return &cutClient{base: base, token: token, c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, // self-signed: pinned to the first boot's fingerprint instead
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("no certificate")
				}
				// The same certificate on every boot: its sealed key
				// survived every cut.
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				if got := hex.EncodeToString(sum[:]); got != want {
					return fmt.Errorf("certificate sha256 %s, first boot had %s", got, want)
				}
				return nil
			},
		}}}}
}

func (c *cutClient) try(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", c.base)
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, out, err
}

// acked is every write the box answered with success before a cut: each
// must be there after it.
type acked struct {
	mu   sync.Mutex
	exts map[string]string // extension -> password
	// tel is the last telephony configuration acknowledged; a later one
	// may have committed without its answer arriving before the cut.
	tel pbxconfig.Telephony
	// Calls from callerExt to calleeExt: calls counts those whose BYE the
	// box answered 200, which it sends only once the call's record is
	// committed (firmware/call); each must have its answered CDR after
	// any later cut. maybe counts the calls the cut interrupted after
	// their INVITE left: each may or may not have one.
	pw           map[string]string // extension -> password of the phones
	calls, maybe int
	regTime      time.Duration // spent registering the phones
}

// The extensions whose phones call each other during the cuts.
const (
	callerExt = "300"
	calleeExt = "301"
)

// answeredCDRs counts the answered records of calls from callerExt to
// calleeExt that the box serves through its CDR API.
func answeredCDRs(c *cutClient) (int, error) {
	n, cursor := 0, ""
	for range 1000 {
		q := url.Values{"party": {callerExt}, "result": {"answered"}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		code, out, err := c.try("GET", "/api/v1/cdr?"+q.Encode(), nil)
		if err != nil || code != http.StatusOK {
			return 0, fmt.Errorf("GET cdr: %d %v %.200s", code, err, out)
		}
		var page cdr.Page
		if err := json.Unmarshal(out, &page); err != nil {
			return 0, fmt.Errorf("cdr answer %.200s: %w", out, err)
		}
		for _, r := range page.Records {
			if r.From == callerExt && r.To == calleeExt && r.Result == cdr.Answered {
				n++
			}
		}
		if page.Next == "" {
			return n, nil
		}
		cursor = page.Next
	}
	return 0, errors.New("GET cdr: too many pages")
}

func trunkPassword(version int64) string { return fmt.Sprintf("TrunkPW-cut-%04d-secret", version) }

// cutTelephony is configuration version next-1 edited into version next:
// the trunk's user name and sealed password name the version they belong to.
func cutTelephony(version int64, ext string) pbxconfig.Telephony {
	c := telephonyWithTrunk(version, ext)
	c.Trunks[0].Username = fmt.Sprintf("user-v%d", version+1)
	c.Trunks[0].Password = trunkPassword(version + 1)
	return c
}

// check compares the running box with every acknowledged write.
func (a *acked) check(c *cutClient) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	code, out, err := c.try("GET", "/api/v1/extensions", nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET extensions: %d %v %.200s", code, err, out)
	}
	var el struct {
		Extensions []string `json:"extensions"`
	}
	if err := json.Unmarshal(out, &el); err != nil {
		return fmt.Errorf("extensions answer %.200s: %w", out, err)
	}
	have := map[string]bool{}
	for _, u := range el.Extensions {
		have[u] = true
	}
	for u := range a.exts {
		if !have[u] {
			return fmt.Errorf("acknowledged extension %s lost (have %d extensions)", u, len(have))
		}
	}
	code, out, err = c.try("GET", "/api/v1/telephony", nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET telephony: %d %v %.200s", code, err, out)
	}
	var tel pbxconfig.Telephony
	if err := json.Unmarshal(out, &tel); err != nil {
		return fmt.Errorf("telephony answer %.200s: %w", out, err)
	}
	// The acknowledged version, or the one after it whose answer the cut
	// swallowed; never an older one.
	if tel.Version != a.tel.Version && tel.Version != a.tel.Version+1 {
		return fmt.Errorf("telephony version %d after the cut, %d was acknowledged", tel.Version, a.tel.Version)
	}
	if a.tel.Version > 0 {
		if len(tel.Trunks) != 1 || tel.Trunks[0].Username != fmt.Sprintf("user-v%d", tel.Version) || !tel.Trunks[0].PasswordSet {
			return fmt.Errorf("telephony version %d holds %+v", tel.Version, tel.Trunks)
		}
	}
	a.tel = tel
	// Every acknowledged call has its record; at most the interrupted
	// ones add to them. A record found for an interrupted call stays
	// (it was committed): it joins the acknowledged count.
	n, err := answeredCDRs(c)
	if err != nil {
		return err
	}
	if n < a.calls || n > a.calls+a.maybe {
		return fmt.Errorf("%d answered call records after the cut: %d calls were acknowledged (BYE answered), %d interrupted", n, a.calls, a.maybe)
	}
	a.calls, a.maybe = n, 0
	return nil
}

// TestX86PowerCuts pulls the power (SIGKILL of QEMU: the guest's page
// cache is gone, what QEMU wrote to the disk file stays) while the admin
// API creates extensions (sealed HA1s) and saves telephony changes (sealed
// trunk password, audit entries): 50 cuts, shared out over two data disks
// whose VMs run side by side (a boot costs 9-20 s of TCG here; one VM per
// core halves the wall time). Before each cut, edgepbxd itself is killed
// with SIGKILL mid-write and restarted by PID 1: 50 of those too, at the
// price of a daemon start instead of a boot. After every kill and cut the
// box must come up (the store passes bbolt's consistency check at open, or
// edgepbxd would stay down), serve the same certificate (its sealed key
// opened), and hold every write it acknowledged. In every fifth round
// (callEvery) a real sipgo phone also calls another through the box's
// B2BUA over SIP/TCP, so CDRs commit while the kill and the cut land:
// every call whose BYE the box answered 200 (sent only once its record is
// committed) must have its answered CDR in the CDR API afterwards, and at
// most the calls the cut interrupted add to them. At the end each disk's
// store is opened on the host and every acknowledged secret unsealed.
func TestX86PowerCuts(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4", "debugfs")
	cuts := powerCuts(t)
	vms := 2
	if v := os.Getenv("EDGEPBX_POWER_CUT_VMS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 8 {
			t.Fatalf("EDGEPBX_POWER_CUT_VMS=%q: want 1..8", v)
		}
		vms = n
	}
	vms = min(vms, cuts)
	img := buildImage(t, "qemu-x86_64")
	start := time.Now()
	t.Run("disks", func(t *testing.T) {
		for i := range vms {
			n := cuts / vms
			if i < cuts%vms {
				n++
			}
			t.Run(fmt.Sprintf("disk%d", i+1), func(t *testing.T) {
				t.Parallel()
				powerCutDisk(t, img, n)
			})
		}
	})
	t.Logf("power cuts: %d on %d disks in %.1fs", cuts, vms, time.Since(start).Seconds())
}

// powerCutDisk claims a box on a fresh data disk and cuts its power cuts
// times during writes, checking everything acknowledged after each.
func powerCutDisk(t *testing.T, img *image.Image, cuts int) {
	disk := filepath.Join(t.TempDir(), "data.img")
	opts := []qemu.Option{qemu.WithDataDisk(disk), qemu.WithHostForward("tcp", 0, 443), qemu.WithHostForward("tcp", 0, 5060)}
	start := time.Now()

	vm := boot(t, img, opts...)
	first := banner(t, vm)
	fp := first["tls sha256"]
	base := func(vm *qemu.VM) string { return "https://127.0.0.1:" + strconv.Itoa(vm.HostPort("tcp", 443)) }
	ba := newBoxAdmin(t, base(vm), fp)
	healthzEventually(t, vm.HostPort("tcp", 443))
	ba.claim(first["setup code"])
	// An API token: no argon2 login per boot (seconds under TCG).
	var tok struct{ Token string }
	if err := json.Unmarshal(ba.do(http.StatusCreated, "POST", "/api/v1/me/tokens", map[string]any{
		"current_password": ownerPW, "name": "power-cuts", "scopes": []string{"admin"}}), &tok); err != nil || tok.Token == "" {
		t.Fatalf("token: %v", err)
	}
	st := &acked{exts: map[string]string{"200": ba.extension("200")}, pw: map[string]string{}}
	for _, u := range []string{callerExt, calleeExt} {
		st.pw[u] = ba.extension(u)
		st.exts[u] = st.pw[u]
	}
	ready := time.Since(start)

	var bootTotal, writeTotal time.Duration
	writes, kills := 0, 0
	for cut := 1; cut <= cuts; cut++ {
		if cut > 1 {
			b0 := time.Now()
			vm = boot(t, img, opts...)
			b1 := time.Now()
			healthzEventually(t, vm.HostPort("tcp", 443))
			bootTotal += time.Since(b0)
			if testing.Verbose() {
				t.Logf("cut %d: boot to ready %.1fs, then HTTPS %.1fs", cut-1, b1.Sub(b0).Seconds(), time.Since(b1).Seconds())
			}
		}
		c := newCutClient(base(vm), fp, tok.Token)
		if err := st.check(c); err != nil {
			t.Fatalf("after cut %d: %v\n%s", cut-1, err, vm.Tail(30))
		}
		// First edgepbxd is killed (SIGKILL through the test hook) in the
		// middle of writes and must come back with them; then the power.
		w0 := time.Now()
		n, settle := st.burst(t, c, vm, cut, 1, func() {
			if err := vm.SendLine("edgepbx-test: kill edgepbxd"); err != nil {
				t.Fatal(err)
			}
		})
		writes += n
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		_, err := vm.WaitFirst(ctx, "edgepbx: edgepbxd ready", "edgepbx: SAFE STATE")
		cancel()
		settle() // the killed edgepbxd is gone: the calls it cut short end here
		if err != nil {
			t.Fatalf("cut %d: edgepbxd after kill -9: %v", cut, err)
		}
		healthzEventually(t, vm.HostPort("tcp", 443))
		if err := st.check(c); err != nil {
			t.Fatalf("kill -9 of edgepbxd in round %d: %v\n%s", cut, err, vm.Tail(30))
		}
		kills++
		n, settle = st.burst(t, c, vm, cut, 2, vm.Kill)
		settle()
		writes += n
		writeTotal += time.Since(w0)
	}

	// The last boot: the final check, then a clean stop and the store read
	// on the host with the device key.
	b0 := time.Now()
	vm = boot(t, img, opts...)
	healthzEventually(t, vm.HostPort("tcp", 443))
	bootTotal += time.Since(b0)
	if err := st.check(newCutClient(base(vm), fp, tok.Token)); err != nil {
		t.Fatalf("after cut %d: %v", cuts, err)
	}
	powerdown(t, vm)
	checkStoreOnHost(t, disk, st)
	t.Logf("%d power cuts and %d kill -9 of edgepbxd after at least %d acknowledged writes, %d extensions, telephony version %d, %d answered call records (all acknowledged ones); first boot to claimed %.1fs, %d reboots %.1fs (%.1fs each), write bursts %.1fs (phones registering %.1fs), total %.1fs",
		cuts, kills, writes, len(st.exts), st.tel.Version, st.calls, ready.Seconds(), cuts, bootTotal.Seconds(), bootTotal.Seconds()/float64(cuts),
		writeTotal.Seconds(), st.regTime.Seconds(), time.Since(start).Seconds())
}

// burst runs two writers against the store, and a phone calling another
// through the box (each call's end a CDR commit), until a few of their
// writes are acknowledged, then calls cut while all are mid-request, and
// returns how many writes it waited for and settle, to be called once the
// cut has certainly happened: it ends the calls the cut left hanging.
// Extension names carry the round and phase.
func (a *acked) burst(t *testing.T, c *cutClient, vm *qemu.VM, round, phase int, cut func()) (int, func()) {
	t.Helper()
	var wg sync.WaitGroup
	var cutting atomic.Bool
	stop := make(chan struct{})
	progress := make(chan struct{}, 64)
	ack := func() {
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	// A refusal (an answer, not a cut connection) is a failure.
	var refusedMu sync.Mutex
	var refused []string
	refuse := func(what string, code int, out []byte) {
		refusedMu.Lock()
		refused = append(refused, fmt.Sprintf("%s: %d %.300s", what, code, out))
		refusedMu.Unlock()
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	wg.Add(2)
	go func() { // extensions: a sealed secret per write
		defer wg.Done()
		for n := 0; !stopped(); n++ {
			user := fmt.Sprintf("%d%d%03d", 1000+round, phase, n)
			code, out, err := c.try("POST", "/api/v1/extensions", map[string]string{"user": user})
			if err != nil {
				return // the cut
			}
			var ans struct{ Password string }
			if code != http.StatusCreated || json.Unmarshal(out, &ans) != nil || ans.Password == "" {
				refuse("create extension "+user, code, out)
				return
			}
			a.mu.Lock()
			a.exts[user] = ans.Password
			a.mu.Unlock()
			ack()
		}
	}()
	go func() { // configuration changes: sealed trunk password, audit entry
		defer wg.Done()
		for !stopped() {
			a.mu.Lock()
			next := cutTelephony(a.tel.Version, "200")
			a.mu.Unlock()
			code, out, err := c.try("PUT", "/api/v1/telephony", next)
			if err != nil {
				return
			}
			if code == http.StatusConflict && cutting.Load() {
				return // a save whose answer the kill swallowed did commit
			}
			var saved pbxconfig.Telephony
			if code != http.StatusOK || json.Unmarshal(out, &saved) != nil {
				refuse(fmt.Sprintf("telephony version %d", next.Version), code, out)
				return
			}
			a.mu.Lock()
			a.tel = saved
			a.mu.Unlock()
			ack()
		}
	}()
	// Calls, in some rounds: one phone calls another until the cut.
	calls := make(chan struct{}, 64)
	settle := func() {}
	wantCalls := 0
	if round%callEvery == 1%callEvery {
		settle = a.placeCalls(t, vm, round, phase, &cutting, stopped, refuse, calls)
		wantCalls = 1 + (round+phase)%3
	}

	// Cut after a number of acknowledged writes and calls that varies
	// with the round, so the cut lands at different points of the commits.
	want := 3 + (round+phase)%5
	for got := 0; got < want; got++ {
		select {
		case <-progress:
		case <-time.After(stepTimeout):
			t.Fatalf("round %d phase %d: writes stalled after %d acknowledged\n%s", round, phase, got, vm.Tail(30))
		}
	}
	for got := 0; got < wantCalls; got++ {
		select {
		case <-calls:
		case <-time.After(stepTimeout):
			refusedMu.Lock()
			r := refused
			refusedMu.Unlock()
			t.Fatalf("round %d phase %d: calls stalled after %d acknowledged: %v\n%s", round, phase, got, r, vm.Tail(30))
		}
	}
	cutting.Store(true)
	cut()
	close(stop)
	wg.Wait()
	if len(refused) > 0 {
		t.Fatalf("round %d phase %d: the box refused writes: %v", round, phase, refused)
	}
	return want + wantCalls, settle
}

// callEvery: calls run in the bursts of every callEvery-th round (the
// first included), both before the kill -9 and before the power cut. A
// call costs seconds under TCG; TestDevModeKill9DuringCalls
// (cmd/edgepbxd) kills edgepbxd during calls 50 times at native speed.
const callEvery = 5

// placeCalls registers both phones (each over its own TCP connection)
// and starts the caller, which calls the callee until stopped; each
// acknowledged call is sent on calls. It returns settle.
func (a *acked) placeCalls(t *testing.T, vm *qemu.VM, round, phase int, cutting *atomic.Bool, stopped func() bool,
	refuse func(what string, code int, out []byte), calls chan<- struct{}) func() {
	t.Helper()
	// The force cause makes sipgo give up an INVITE the dead box never
	// answers at once, instead of sending CANCEL and waiting out its 32 s
	// timer.
	callCtx, cancelCalls := context.WithCancelCause(context.Background())
	var caller, callee *tcpPhone
	var callWG sync.WaitGroup
	port := vm.HostPort("tcp", 5060)
	var err error
	if caller, err = newTCPPhone(callerExt, a.pw[callerExt], port); err != nil {
		t.Fatal(err)
	}
	if callee, err = newTCPPhone(calleeExt, a.pw[calleeExt], port); err != nil {
		t.Fatal(err)
	}
	r0 := time.Now()
	for _, p := range []*tcpPhone{callee, caller} {
		rctx, rcancel := context.WithTimeout(context.Background(), stepTimeout)
		err := p.register(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("round %d phase %d: %v\n%s", round, phase, err, vm.Tail(30))
		}
	}
	a.regTime += time.Since(r0)
	callWG.Add(1)
	go func() {
		defer callWG.Done()
		for !stopped() {
			err := caller.call(callCtx, calleeExt)
			a.mu.Lock()
			switch {
			case err == nil:
				a.calls++
			case cutting.Load():
				a.maybe++ // its record may have been committed, or not
			}
			a.mu.Unlock()
			if err != nil {
				if !cutting.Load() {
					refuse("call "+callerExt+" -> "+calleeExt, 0, []byte(err.Error()))
				}
				return
			}
			select {
			case calls <- struct{}{}:
			default:
			}
		}
	}()
	return func() {
		cancelCalls(sipgo.WaitAnswerForceCancelErr)
		callWG.Wait()
		caller.Close()
		callee.Close()
	}
}

// checkStoreOnHost opens the disk's store on the host (bbolt's consistency
// check included) and unseals every acknowledged secret with the device key.
func checkStoreOnHost(t *testing.T, disk string, st *acked) {
	t.Helper()
	_, _, ring := diskKeys(t, disk)
	key := ring.DataKey(keys.Store)
	dbFile := filepath.Join(t.TempDir(), "edgepbx.db")
	if err := os.WriteFile(dbFile, readDiskFile(t, disk, "/edgepbx.db"), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(dbFile, key)
	if err != nil {
		t.Fatalf("store after the cuts: %v", err)
	}
	defer db.Close()
	type extRecord struct {
		Realm string `json:"realm"`
		MD5   []byte `json:"ha1_md5"`
	}
	err = db.View(func(tx *store.Tx) error {
		for user, pw := range st.exts {
			var r extRecord
			if ok, err := tx.Get("sip.extensions", user, &r); err != nil || !ok {
				return fmt.Errorf("extension %s: present %v, %v", user, ok, err)
			}
			ha1, err := db.Unseal(r.MD5, "sip/ha1/"+sipedge.AlgMD5+"/"+user)
			if err != nil {
				return fmt.Errorf("extension %s: %w", user, err)
			}
			if string(ha1) != sipedge.HA1(sipedge.AlgMD5, user, r.Realm, pw) {
				return fmt.Errorf("extension %s: HA1 does not match the password the box answered", user)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	if tel.Version() != st.tel.Version {
		t.Fatalf("host reads telephony version %d, the box served %d", tel.Version(), st.tel.Version)
	}
	pw, err := tel.TrunkPassword("itsp")
	if err != nil || string(pw) != trunkPassword(st.tel.Version) {
		t.Fatalf("trunk password of version %d: %q %v", st.tel.Version, pw, err)
	}
}
