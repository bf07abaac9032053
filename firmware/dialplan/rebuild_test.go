package dialplan

import (
	"errors"
	"slices"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// TestRebuildKeepsState: a new plan version carries on the live calls,
// the hourly counts and the suspensions of the extensions and trunks it
// still has; a removed extension's state goes; leases taken on the old
// engine release into the new one's counters; a plan that does not
// validate leaves the old engine as it was.
func TestRebuildKeepsState(t *testing.T) {
	c := newClock()
	log, _ := logs.New(nil, 100)
	p := testPlan()
	p.BurstAttempts = 3
	e, err := New(p, nil, log, WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	// 102 (1 at a time, 3 an hour): one call live, one more admitted this hour.
	_, live, err := e.RouteOutbound("102", "030111")
	if err != nil {
		t.Fatal(err)
	}
	_, l2, err := e.RouteOutbound("101", "030222")
	if err != nil {
		t.Fatal(err)
	}
	// 103 (internal only) bursts into a suspension; 100 is suspended too.
	for range 3 {
		e.RouteOutbound("103", "030123")
		e.RouteOutbound("100", "+882 1234 5678")
	}
	for _, x := range []string{"100", "103"} {
		if _, ok := e.Suspended(x); !ok {
			t.Fatalf("%s not suspended before the rebuild", x)
		}
	}

	bad := p
	bad.Country = "ZZ"
	if _, err := e.Rebuild(bad); err == nil {
		t.Fatal("rebuild with an unknown country succeeded")
	}

	// The edit: 103 gains national (a suspension survives an edit), 100
	// is removed, 104 is new, trunk backup is removed.
	next := testPlan()
	next.BurstAttempts = 3
	next.Extensions = slices.DeleteFunc(slices.Clone(next.Extensions), func(x Extension) bool { return x.Number == "100" })
	next.Extensions[2].Classes = []Class{Internal, National} // 103
	next.Extensions = append(next.Extensions, Extension{Number: "104"})
	next.Trunks = next.Trunks[:1]
	next.Routes = next.Routes[:2]
	next.DIDs = nil
	n, err := e.Rebuild(next)
	if err != nil {
		t.Fatal(err)
	}

	if got, trunk := n.Active("102", "itsp"); got != 1 || trunk != 2 {
		t.Fatalf("after rebuild: 102 has %d calls, itsp %d; want 1 and 2", got, trunk)
	}
	if _, _, err := n.RouteOutbound("102", "030333"); !errors.Is(err, ErrConcurrent) {
		t.Fatalf("102's live call forgotten: %v", err)
	}
	if _, ok := n.Suspended("103"); !ok {
		t.Fatal("103's suspension did not survive the edit")
	}
	if _, _, err := n.RouteOutbound("103", "030123"); !errors.Is(err, ErrSuspended) {
		t.Fatalf("suspended 103 called out after the edit: %v", err)
	}
	if _, ok := n.Suspended("100"); ok {
		t.Fatal("removed extension 100 still suspended")
	}
	// The old engine's lease frees the shared slot.
	live.Release()
	if got, _ := n.Active("102", "itsp"); got != 0 {
		t.Fatalf("old lease released, 102 still has %d calls", got)
	}
	// 102's hour: 1 admitted before the rebuild, 2 more allowed, then refused.
	for i := range 2 {
		_, l, err := n.RouteOutbound("102", "030444")
		if err != nil {
			t.Fatalf("call %d after rebuild: %v", i, err)
		}
		l.Release()
	}
	if _, _, err := n.RouteOutbound("102", "030555"); !errors.Is(err, ErrRate) {
		t.Fatalf("hourly count reset by the rebuild: %v", err)
	}
	l2.Release()
	if _, trunk := n.Active("101", "itsp"); trunk != 0 {
		t.Fatalf("itsp has %d calls after all released", trunk)
	}

	// 100 added back starts clean.
	n2, err := n.Rebuild(testPlan())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n2.Suspended("100"); ok {
		t.Fatal("re-added 100 inherited a suspension")
	}
	if _, l, err := n2.RouteOutbound("100", "030123"); err != nil {
		t.Fatalf("re-added 100: %v", err)
	} else {
		l.Release()
	}
	if _, ok := n2.Suspended("103"); !ok {
		t.Fatal("103's suspension lost in the second rebuild")
	}
}
