package media

import (
	"bytes"
	"context"
	"regexp"
	"runtime"
	"testing"
	"time"
)

var mediaFrame = regexp.MustCompile(`/firmware/media/([a-z0-9_]+)\.go:|github\.com/pion/dtls`)

// mediaGoroutines counts goroutines running, or started by, the relay's
// code (not its tests) or pion/dtls, with one of them as an example.
func mediaGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n, ex := 0, ""
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, m := range mediaFrame.FindAllSubmatch(g, -1) {
			if len(m[1]) == 0 || !bytes.HasSuffix(m[1], []byte("_test")) {
				n++
				if ex == "" {
					ex = string(g)
				}
				break
			}
		}
	}
	return n, ex
}

// TestCallCloseJoinsGoroutines: after Close of a call whose DTLS-SRTP
// handshake finished (its reader and the goroutine that closes pion's
// connection are running) and of the relay's last call (the reactor
// loops stop), no goroutine of the relay or of pion/dtls is left. The
// wait is bounded and far below any timeout of the relay: joined
// goroutines are gone within microseconds of Close.
func TestCallCloseJoinsGoroutines(t *testing.T) {
	// A previous test's loop may still be returning from its last round
	// (its stop is signalled just before the goroutine ends).
	for start := time.Now(); ; time.Sleep(time.Millisecond) {
		n, g := mediaGoroutines()
		if n == 0 {
			break
		}
		if time.Since(start) > 2*time.Second {
			t.Fatalf("%d relay goroutines before the test, e.g.\n%s", n, g)
		}
	}
	r := newTestRelay(t)
	call, err := r.NewCall("leak")
	if err != nil {
		t.Fatal(err)
	}
	a := newDTLSPhone(t, call.LocalPort(A))
	b := newPhone(t, "127.0.0.1")
	acert, afp, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: afp}
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, pa); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	conn, err := a.handshake(acert, r.fp)
	if err != nil {
		t.Fatal("client handshake:", err)
	}
	done, herr := call.DTLSDone(A)
	<-done
	if herr() != nil {
		t.Fatal(herr())
	}
	conn.Close() // the phone's side, so only the relay's goroutines remain
	if n, _ := mediaGoroutines(); n == 0 {
		t.Fatal("no relay goroutine while the call is up: the check sees nothing")
	}
	if err := call.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	n, g := mediaGoroutines()
	for n != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		n, g = mediaGoroutines()
	}
	if n != 0 {
		t.Fatalf("%d goroutines left after Close, e.g.\n%s", n, g)
	}
}
