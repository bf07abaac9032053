package dialplan

import (
	"errors"
	"testing"
)

func TestAppTargetSplits(t *testing.T) {
	for _, target := range []string{"voicemail/100", "voicemail-access/103", "voicemail-access/", "conference/800"} {
		if app, arg := SplitAppTarget(target); AppTarget(app, arg) != target {
			t.Errorf("target %q does not split back: %q %q", target, app, arg)
		}
	}
}

// An application call takes the caller's concurrency slot like any call.
func TestAdmitAppCountsConcurrency(t *testing.T) {
	e, err := New(testPlan(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AdmitApp("999"); !errors.Is(err, ErrUnknownExtension) {
		t.Fatalf("unknown extension: %v", err)
	}
	l1, err := e.AdmitApp("102") // 102 allows one call at a time
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.AdmitApp("102"); !errors.Is(err, ErrConcurrent) {
		t.Fatalf("second concurrent app call: %v, want ErrConcurrent", err)
	}
	l1.Release()
	l2, err := e.AdmitApp("102")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
}
