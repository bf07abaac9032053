package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 24 << 20: "24.0 MiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args []string
		want string // substring of the error; "" means success
	}{
		{[]string{"build"}, `required flag(s) "board" not set`},
		{[]string{"run"}, `required flag(s) "board" not set`},
		{[]string{"build", "--board", "no-such-board"}, "no-such-board"},
		{[]string{"run", "--board", "qemu-x86_64", "extra"}, "unknown command"},
		{[]string{"run", "--board", "qemu-x86_64", "--https-port", "x"}, "invalid argument"},
		{[]string{"--help"}, ""},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := newRoot()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(tc.args)
			err := root.Execute()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "edgepbx", "main.go")); err != nil {
		t.Fatalf("repo root %q: %v", root, err)
	}
}
