package sipedge

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/netfw"
)

// slowCDRs is a call record store on a slow disk (a cold machine): each
// write takes a while, and after close (edgepbxd closing its store once
// the B2BUA is closed) writes fail, as bbolt's do.
type slowCDRs struct {
	mu     sync.Mutex
	closed bool
	recs   []cdr.Record
}

func (s *slowCDRs) Write(r cdr.Record) error {
	time.Sleep(200 * time.Millisecond) // the disk, not a wait for anything
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("store closed")
	}
	s.recs = append(s.recs, r)
	return nil
}

func (s *slowCDRs) close() []cdr.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.recs
}

// TestCloseWaitsForEndingCall: a call hung up by the caller is still
// writing its record when edgepbxd stops (the callee already got its
// BYE). The B2BUA's Close must return only once that record is written,
// since the store closes right after; before, Close skipped calls that
// were already ending and the record was lost ("CDRs []" in the daemon's
// test on a cold machine).
func TestCloseWaitsForEndingCall(t *testing.T) {
	s := startServer(t, nil)
	ports, err := media.NewPorts(43000, 43999)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	relay, err := media.NewRelay(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports, Pinholes: &holeLog{open: map[netfw.Pinhole]bool{}}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dialplan.New(dialplan.Plan{Country: "DE", Extensions: []dialplan.Extension{{Number: "101"}, {Number: "102"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cdrs := &slowCDRs{}
	b, err := call.New(call.Config{Client: s.Sender(), Contact: s.Contact("udp"), Relay: relay, Plan: plan,
		Directory: s.Directory(nil), CDR: cdrs, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.SetCalls(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, c := siptest.NewPhone(t, "101", testPassword), siptest.NewPhone(t, "102", testPassword)
	a.Register(ctx, "127.0.0.1", s.udp.Port)
	c.Register(ctx, "127.0.0.1", s.udp.Port)
	d, _, err := a.Dial(ctx, "127.0.0.1", s.udp.Port, "102")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Byes: // the call is ending: its record is being written
	case <-ctx.Done():
		t.Fatal("callee got no BYE")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if recs := cdrs.close(); len(recs) != 1 || recs[0].From != "101" || recs[0].To != "102" || recs[0].Result != cdr.Answered {
		t.Fatalf("records once Close returned: %+v", recs)
	}
}
