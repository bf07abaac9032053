package dmi

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSane(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"PF2XK9QZ", true},
		{"VMware-42-1a", true},
		{"", false},
		{"abc", false},
		{"To be filled by O.E.M.", false},
		{"Default string", false},
		{"NONE", false},
		{"00000000", false},
		{"          ", false},
		{"ab cd", false},
		{"x\x1b[2J", false},
		{"0123456789abcdef0123456789abcdef0", false}, // 33 chars
	}
	for _, tt := range tests {
		if got := Sane(tt.in); got != tt.want {
			t.Errorf("Sane(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestSerial(t *testing.T) {
	tests := []struct {
		name    string
		dmi, dt string
		want    string
	}{
		{"dmi", "PF2XK9QZ\n", "", "PF2XK9QZ"},
		{"placeholder falls through to device tree", "Default string\n", "RPI4-1234abcd\x00", "RPI4-1234abcd"},
		{"nothing sane", "0\n", "\x00", ""},
		{"nothing at all", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for p, v := range map[string]string{dmiSerial: tt.dmi, dtSerial: tt.dt} {
				if v == "" {
					continue
				}
				os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
				if err := os.WriteFile(filepath.Join(root, p), []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := Serial(root); got != tt.want {
				t.Fatalf("Serial = %q, want %q", got, tt.want)
			}
		})
	}
}
