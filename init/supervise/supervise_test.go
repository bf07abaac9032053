package supervise

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

const childEnv = "SUPERVISE_TEST_CHILD"

// TestMain doubles as the supervised program: with childEnv set the test
// binary behaves as the mode says instead of running tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		child(mode)
		os.Exit(3)
	}
	// Orphaned grandchildren are re-parented to us, as they would be to PID 1.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	os.Exit(m.Run())
}

func child(mode string) {
	name, arg, _ := strings.Cut(mode, ":")
	switch name {
	case "exit":
		n, _ := strconv.Atoi(arg)
		fmt.Println("exiting", n)
		os.Exit(n)
	case "lines":
		n, _ := strconv.Atoi(arg)
		w := bufio.NewWriter(os.Stdout)
		for i := range n {
			fmt.Fprintf(w, "line %d\n", i)
		}
		fmt.Fprintf(w, "esc \x1b[2Jend\n")
		w.Flush()
		os.Exit(ExitStayDown)
	case "caps":
		st, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(st), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:", "CapAmb:", "NoNewPrivs:"} {
				if strings.HasPrefix(l, k) {
					fmt.Println(strings.Join(strings.Fields(l), " "))
				}
			}
		}
		boot, err := io.ReadAll(os.NewFile(3, "bootstrap"))
		fmt.Printf("fd3: %s %v\n", boot, err)
		fmt.Printf("pgid-is-pid: %v\n", syscall.Getpgrp() == os.Getpid())
		os.Exit(ExitStayDown)
	case "group":
		signal.Ignore(syscall.SIGTERM)
		self, _ := os.Executable()
		p, err := os.StartProcess(self, []string{self}, &os.ProcAttr{
			Env:   []string{childEnv + "=sleep"},
			Files: []*os.File{nil, os.Stdout, os.Stderr},
		})
		if err != nil {
			fmt.Println("grandchild:", err)
			os.Exit(1)
		}
		fmt.Println("grandchild", p.Pid)
		for {
			time.Sleep(time.Hour)
		}
	case "sleep":
		signal.Ignore(syscall.SIGTERM)
		for {
			time.Sleep(time.Hour)
		}
	}
}

// exe copies the test binary where an unprivileged uid may run it.
func exe(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "child")
	if err := os.WriteFile(p, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type harness struct {
	t      *testing.T
	sup    *Supervisor
	events chan Event
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, events: make(chan Event, 64)}
	h.sup = New(slog.New(slog.DiscardHandler), WithEvents(h.events))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h.sup.Stop(ctx)
		h.sup.Close()
	})
	return h
}

// next returns the next event of kind k, failing after a generous bound.
func (h *harness) next(k EventKind) Event {
	h.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e := <-h.events:
			if e.Kind == k {
				return e
			}
		case <-timeout:
			h.t.Fatalf("no %v event", k)
		}
	}
}

func svcFor(t *testing.T, name, mode string) Service {
	return Service{Name: name, Path: exe(t), Env: []string{childEnv + "=" + mode}}
}

func TestBackoffNext(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second, StableAfter: 10 * time.Second}
	tests := []struct {
		prev, ran, want time.Duration
	}{
		{0, 0, 100 * time.Millisecond},
		{100 * time.Millisecond, time.Second, 200 * time.Millisecond},
		{400 * time.Millisecond, 0, 800 * time.Millisecond},
		{800 * time.Millisecond, 0, time.Second},
		{time.Second, 0, time.Second},
		{time.Second, 10 * time.Second, 100 * time.Millisecond}, // stable run resets
		{time.Second, time.Hour, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := b.Next(tt.prev, tt.ran); got != tt.want {
			t.Errorf("Next(%v, %v) = %v, want %v", tt.prev, tt.ran, got, tt.want)
		}
	}
	if got := (Backoff{}).Next(0, 0); got != DefaultMin {
		t.Errorf("default min = %v", got)
	}
}

func TestRestartWithBackoff(t *testing.T) {
	h := newHarness(t)
	s := svcFor(t, "flaky", "exit:1")
	s.Backoff = Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond, StableAfter: time.Hour}
	if err := h.sup.Start(s); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{5, 10, 20, 20}
	pids := map[int]bool{}
	for i, w := range want {
		st := h.next(Started)
		pids[st.Pid] = true
		e := h.next(Exited)
		if e.ExitCode != 1 || e.Delay != w*time.Millisecond {
			t.Fatalf("exit %d: code %d delay %v, want 1 and %v", i, e.ExitCode, e.Delay, w*time.Millisecond)
		}
	}
	if len(pids) != len(want) {
		t.Fatalf("restarts reused pids: %v", pids)
	}
	if out := h.sup.Output("flaky"); len(out) == 0 || out[len(out)-1] != "exiting 1" {
		t.Fatalf("output = %q", out)
	}
}

func TestExit125StaysDown(t *testing.T) {
	h := newHarness(t)
	s := svcFor(t, "done", "exit:125")
	s.Backoff = Backoff{Min: time.Millisecond}
	if err := h.sup.Start(s); err != nil {
		t.Fatal(err)
	}
	h.next(Started)
	e := h.next(StayDown)
	if e.ExitCode != 125 {
		t.Fatalf("exit %d", e.ExitCode)
	}
	st, _ := h.sup.Status("done")
	if st.Running || !st.Down || st.Starts != 1 {
		t.Fatalf("status %+v", st)
	}
	// Nothing else happens: Stop finds nothing running.
	if err := h.sup.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-h.events:
		t.Fatalf("unexpected event after stay-down: %+v", e)
	default:
	}
}

func TestRingBuffer(t *testing.T) {
	h := newHarness(t)
	var console strings.Builder
	h.sup.console = &console // written only by the output reader, which finishes before the exit event
	if err := h.sup.Start(svcFor(t, "chatty", "lines:150")); err != nil {
		t.Fatal(err)
	}
	h.next(StayDown)
	out := h.sup.Output("chatty")
	if len(out) != RingLines {
		t.Fatalf("kept %d lines, want %d", len(out), RingLines)
	}
	if out[0] != "line 51" || out[98] != "line 149" {
		t.Fatalf("first %q, 99th %q", out[0], out[98])
	}
	if out[99] != "esc ?[2Jend" {
		t.Fatalf("control sequence not neutralised: %q", out[99])
	}
	if !strings.Contains(console.String(), "chatty: line 0\n") {
		t.Fatal("console copy lacks prefixed first line")
	}
}

func TestRingWraps(t *testing.T) {
	r := NewRing(3)
	for i := range 5 {
		r.Add(strconv.Itoa(i))
	}
	if got := strings.Join(r.Lines(), ","); got != "2,3,4" {
		t.Fatalf("got %s", got)
	}
	if got := NewRing(3).Lines(); len(got) != 0 {
		t.Fatalf("empty ring: %q", got)
	}
}

func TestStopKillsWholeGroup(t *testing.T) {
	h := newHarness(t)
	if err := h.sup.Start(svcFor(t, "group", "group")); err != nil {
		t.Fatal(err)
	}
	h.next(Started)
	var gpid int
	for gpid == 0 {
		for _, l := range h.sup.Output("group") {
			if n, ok := strings.CutPrefix(l, "grandchild "); ok {
				gpid, _ = strconv.Atoi(n)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Both ignore SIGTERM: Stop must escalate to SIGKILL at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := h.sup.Stop(ctx); err == nil {
		t.Fatal("Stop reported a clean stop of processes that ignore SIGTERM")
	}
	e := h.next(Stopped)
	if e.Signal != syscall.SIGKILL {
		t.Fatalf("service ended by %v", e.Signal)
	}
	// The grandchild is killed with the group and reaped as an orphan.
	for deadline := time.Now().Add(10 * time.Second); unix.Kill(gpid, 0) == nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still exists", gpid)
		}
	}
}

func TestSignalGroupRestarts(t *testing.T) {
	h := newHarness(t)
	s := svcFor(t, "victim", "sleep")
	s.Backoff = Backoff{Min: time.Millisecond}
	if err := h.sup.Start(s); err != nil {
		t.Fatal(err)
	}
	first := h.next(Started)
	if err := h.sup.Signal("victim", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e := h.next(Exited)
	if e.Signal != syscall.SIGKILL || e.Pid != first.Pid {
		t.Fatalf("exit event %+v", e)
	}
	if again := h.next(Started); again.Pid == first.Pid {
		t.Fatal("not restarted")
	}
}

func TestDropPrivileges(t *testing.T) {
	netnstest.NeedRoot(t, "dropping privileges")
	h := newHarness(t)
	s := svcFor(t, "daemon", "caps")
	s.Credential = &syscall.Credential{Uid: 1000, Gid: 1000}
	s.AmbientCaps = []uintptr{unix.CAP_NET_BIND_SERVICE}
	s.NoNewPrivs = true
	s.Files = func() ([]*os.File, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer w.Close()
		if _, err := w.WriteString(`{"serial":"X"}`); err != nil {
			r.Close()
			return nil, err
		}
		return []*os.File{r}, nil
	}
	if err := h.sup.Start(s); err != nil {
		t.Fatal(err)
	}
	h.next(StayDown)
	got := strings.Join(h.sup.Output("daemon"), "\n")
	for _, want := range []string{
		"Uid: 1000 1000 1000 1000",
		"Gid: 1000 1000 1000 1000",
		"CapEff: 0000000000000400",
		"CapPrm: 0000000000000400",
		"CapAmb: 0000000000000400",
		"NoNewPrivs: 1",
		`fd3: {"serial":"X"} <nil>`,
		"pgid-is-pid: true",
	} {
		if !strings.Contains(got, want+"\n") && !strings.HasSuffix(got, want) {
			t.Errorf("child status lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Groups: 0") {
		t.Errorf("supplementary groups kept:\n%s", got)
	}
	// PID 1 itself keeps no_new_privs off.
	st, _ := os.ReadFile("/proc/self/status")
	if !strings.Contains(string(st), "NoNewPrivs:\t0") {
		t.Error("no_new_privs leaked into the supervisor process")
	}
}
