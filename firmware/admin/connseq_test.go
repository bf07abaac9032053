package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
)

// TestNewConnSinceFailsClosed: a confirmation counts only on a connection
// accepted after a change this process recorded. An unknown id (made
// before a restart, or forgotten among newer changes) proves nothing.
func TestNewConnSinceFailsClosed(t *testing.T) {
	s := &Server{}
	conn := func() context.Context { return s.ConnContext(context.Background(), nil) }
	check := func(ctx context.Context, id string) error {
		r := httptest.NewRequest("POST", "/", nil).WithContext(ctx)
		return s.newConnSince(r, id)
	}

	old := conn()
	s.markPending("first")
	fresh := conn()
	if err := check(old, "first"); !errors.Is(err, errStaleConn) {
		t.Errorf("connection from before the change: %v, want errStaleConn", err)
	}
	if err := check(fresh, "first"); err != nil {
		t.Errorf("connection after the change: %v", err)
	}
	// A restart forgets every record: a fresh process refuses the id
	// whatever the connection.
	restarted := &Server{}
	r := httptest.NewRequest("POST", "/", nil).WithContext(restarted.ConnContext(context.Background(), nil))
	if err := restarted.newConnSince(r, "first"); !errors.Is(err, errUnknownChange) {
		t.Errorf("after a restart: %v, want errUnknownChange", err)
	}
	// More changes than records: the oldest is forgotten and refused,
	// the newest still confirm.
	for i := range maxPendingMarks {
		s.markPending(fmt.Sprint("change-", i))
	}
	newest := conn()
	if err := check(newest, "first"); !errors.Is(err, errUnknownChange) {
		t.Errorf("forgotten change: %v, want errUnknownChange", err)
	}
	if err := check(newest, fmt.Sprint("change-", maxPendingMarks-1)); err != nil {
		t.Errorf("newest change: %v", err)
	}
	if len(s.conns.pending) != maxPendingMarks {
		t.Errorf("%d records kept, want %d", len(s.conns.pending), maxPendingMarks)
	}
	// No connection number: nothing is new.
	if err := check(context.Background(), "change-1"); err == nil {
		t.Error("request without a connection number counted as new")
	}
}
