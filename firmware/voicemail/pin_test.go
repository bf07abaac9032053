package voicemail

import (
	"errors"
	"testing"
)

func TestCheckPIN(t *testing.T) {
	tests := []struct {
		pin, ext string
		ok       bool
	}{
		{"493817", "201", true},
		{"80412657", "201", true},
		{"12345", "201", false},         // too short
		{"1234567890123", "201", false}, // too long
		{"49381a", "201", false},        // not digits
		{"000000", "201", false},        // one digit
		{"121212", "201", false},        // repeated group
		{"123123", "201", false},        // repeated group
		{"112233", "201", false},        // pairs
		{"111222", "201", false},        // triples
		{"123456", "201", false},        // up
		{"987654", "201", false},        // down
		{"890123", "201", false},        // up, wrapping
		{"492019", "201", false},        // contains the extension
		{"491027", "201", false},        // contains it reversed
		{"493817", "", true},
	}
	for _, tc := range tests {
		err := CheckPIN(tc.pin, tc.ext)
		if (err == nil) != tc.ok {
			t.Errorf("CheckPIN(%q, %q) = %v, want ok=%v", tc.pin, tc.ext, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrWeakPIN) {
			t.Errorf("CheckPIN(%q): %v is not ErrWeakPIN", tc.pin, err)
		}
	}
}

func TestGeneratePIN(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		p, err := GeneratePIN("201", 6)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckPIN(p, "201"); err != nil {
			t.Fatalf("generated %q: %v", p, err)
		}
		seen[p] = true
	}
	if len(seen) < 45 {
		t.Fatalf("only %d different PINs in 50", len(seen))
	}
}

func FuzzCheckPIN(f *testing.F) {
	for _, s := range []string{"493817", "123456", "", "0", "99999999999999", "12a456"} {
		f.Add(s, "201")
	}
	f.Fuzz(func(t *testing.T, pin, ext string) {
		if err := CheckPIN(pin, ext); err == nil {
			if len(pin) < MinPINLen || len(pin) > MaxPINLen {
				t.Fatalf("accepted %q of length %d", pin, len(pin))
			}
			for i := 0; i < len(pin); i++ {
				if pin[i] < '0' || pin[i] > '9' {
					t.Fatalf("accepted non-digit PIN %q", pin)
				}
			}
		}
	})
}
