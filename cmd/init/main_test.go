package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/control"
)

// TestTestHookOnlyWithTag builds PID 1 with and without the testhook tag:
// the production binary must not contain the console command path at all.
func TestTestHookOnlyWithTag(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/init twice")
	}
	dir := t.TempDir()
	build := func(name string, tags ...string) []byte {
		t.Helper()
		out := filepath.Join(dir, name)
		args := []string{"build", "-trimpath", "-o", out}
		if len(tags) > 0 {
			args = append(args, "-tags", tags[0])
		}
		cmd := exec.Command("go", append(args, ".")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", tags, err, b)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	prod := build("init")
	test := build("init-test", "testhook")
	for _, s := range []string{"edgepbx-test: kill edgepbxd", "edgepbx-test: poweroff", "console test hook"} {
		if bytes.Contains(prod, []byte(s)) {
			t.Errorf("production build contains %q", s)
		}
		if !bytes.Contains(test, []byte(s)) {
			t.Errorf("testhook build lacks %q (the check above would prove nothing)", s)
		}
	}
}

func TestIsFirewallModule(t *testing.T) {
	for name, want := range map[string]bool{
		"nf_tables": true, "nft_ct": true, "nft-limit": true, "nf_conntrack": true,
		"crc32c_generic": true, "virtio_net": false, "ext4": false, "softdog": false,
	} {
		if got := isFirewallModule(name); got != want {
			t.Errorf("%s: %v", name, got)
		}
	}
}

func TestHealthGating(t *testing.T) {
	b := &box{start: time.Now(), health: healthState{onChange: make(chan struct{}, 1)}}
	if !b.healthy() {
		t.Fatal("no grace before the first report")
	}
	b.health.set(control.Health{Ready: false})
	if b.healthy() {
		t.Fatal("healthy while edgepbxd says not ready")
	}
	if ready, _ := b.health.set(control.Health{Ready: true, Claimed: true}); !ready || !b.healthy() {
		t.Fatal("not healthy after a ready report")
	}
	b.health.markDown("restarting")
	h, _, _ := b.health.snapshot()
	if b.healthy() || !h.Claimed {
		t.Fatalf("after exit: healthy %v, %+v", b.healthy(), h)
	}
	b.health.mu.Lock()
	b.health.ready, b.health.last.Ready, b.health.at = true, true, time.Now().Add(-healthMaxAge)
	b.health.mu.Unlock()
	if b.healthy() {
		t.Fatal("healthy on a stale report")
	}
}
