package dialplan

import (
	"errors"
	"testing"
)

func TestAppCodes(t *testing.T) {
	e, err := New(testPlan(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, dialled string
		kind          Kind
		target        string
		err           error
	}{
		{"100", "*97", KindApp, "voicemail-access/100", nil},
		{"103", "sip:*97@box", KindApp, "voicemail-access/103", nil},
		{"100", "*98", KindApp, "voicemail-access/", nil},
		// A code in front of a number is not an application: it is
		// classified (and refused towards a trunk that does not list it).
		{"101", "*97#00491701234567", "", "", ErrFeatureCode},
		{"999", "*97", "", "", ErrUnknownExtension},
	}
	for _, tc := range tests {
		d, lease, err := e.RouteOutbound(tc.from, tc.dialled)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s→%s: err %v, want %v", tc.from, tc.dialled, err, tc.err)
		}
		lease.Release()
		if err != nil {
			continue
		}
		if d.Kind != tc.kind || d.Target != tc.target {
			t.Errorf("%s→%s: %s %q, want %s %q", tc.from, tc.dialled, d.Kind, d.Target, tc.kind, tc.target)
		}
		if app, arg := SplitAppTarget(d.Target); AppTarget(app, arg) != d.Target {
			t.Errorf("target %q does not split back", d.Target)
		}
	}
}

// An application call takes the caller's concurrency slot like any call.
func TestAppCodeCountsConcurrency(t *testing.T) {
	e, err := New(testPlan(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, l1, err := e.RouteOutbound("102", "*97") // 102 allows one call at a time
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.RouteOutbound("102", "*97"); !errors.Is(err, ErrConcurrent) {
		t.Fatalf("second concurrent app call: %v, want ErrConcurrent", err)
	}
	l1.Release()
	_, l2, err := e.RouteOutbound("102", "*97")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
}
