// Package supervise runs PID 1's services: each in its own process group,
// with dropped uid/gid and capabilities and no_new_privs, restarted with
// exponential backoff (exit status 125 means "stay down"), with the last 100
// lines of its output kept in a ring buffer and copied to the console.
//
// The Supervisor is also the only waiter for child processes in PID 1: one
// reap loop calls wait4(-1) and hands each exit status to the service that
// owns the pid, or logs it as a reaped orphan. Nothing else in PID 1 may wait
// for children (no os/exec), or exit statuses would be stolen.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Service describes one supervised program.
type Service struct {
	Name string
	Path string
	Args []string // argv[1:]
	Env  []string
	Dir  string
	// Credential drops to this uid/gid (with no supplementary groups) when set.
	Credential *syscall.Credential
	// AmbientCaps are the only capabilities the program keeps after exec.
	AmbientCaps []uintptr
	// NoNewPrivs sets PR_SET_NO_NEW_PRIVS in the child before exec.
	NoNewPrivs bool
	// Files returns the files for fds 3, 4, … for one start; the supervisor
	// closes them in PID 1 right after the start (e.g. the bootstrap pipe).
	Files   func() ([]*os.File, error)
	Backoff Backoff
}

// EventKind says what happened to a service.
type EventKind int

const (
	Started  EventKind = iota + 1
	Exited             // exited or failed to start; will restart after Delay
	StayDown           // exited with 125: not restarted
	Stopped            // stopped by Stop
)

func (k EventKind) String() string {
	switch k {
	case Started:
		return "started"
	case Exited:
		return "exited"
	case StayDown:
		return "stay-down"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports a service's life cycle to an observer (cmd/init, tests).
type Event struct {
	Service  string
	Kind     EventKind
	Pid      int
	ExitCode int            // -1 when killed by a signal
	Signal   syscall.Signal // the killing signal, if any
	Delay    time.Duration  // Exited: wait before the next start
	Err      error          // start failure
}

// ExitStayDown is the exit status with which a service asks not to be restarted.
const ExitStayDown = 125

// Status is a snapshot of one service.
type Status struct {
	Running  bool
	Pid      int
	Starts   int
	Down     bool // exited 125 or stopped
	LastExit int
}

type svc struct {
	Service
	ring *Ring

	mu     sync.Mutex
	status Status
}

// Supervisor owns the service processes and reaps every child of PID 1.
type Supervisor struct {
	log     *slog.Logger
	console io.Writer
	events  chan<- Event

	mu    sync.Mutex // guards procs and svcs; held across start so the reaper never sees an unregistered pid
	procs map[int]chan unix.WaitStatus
	svcs  map[string]*svc

	spawn    chan spawnReq // served by the no_new_privs thread
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // run loops
	sigch    chan os.Signal
	done     chan struct{}
	reaped   chan struct{}
}

// Option configures a Supervisor.
type Option func(*Supervisor)

// WithConsole copies every service output line, prefixed with its name, to w.
func WithConsole(w io.Writer) Option { return func(s *Supervisor) { s.console = w } }

// WithEvents sends every life-cycle event to ch (blocking: keep it drained).
func WithEvents(ch chan<- Event) Option { return func(s *Supervisor) { s.events = ch } }

// New starts the reap loop and the spawner thread.
func New(log *slog.Logger, opts ...Option) *Supervisor {
	s := &Supervisor{
		log:      log,
		console:  io.Discard,
		procs:    make(map[int]chan unix.WaitStatus),
		svcs:     make(map[string]*svc),
		spawn:    make(chan spawnReq),
		stopping: make(chan struct{}),
		sigch:    make(chan os.Signal, 1),
		done:     make(chan struct{}),
		reaped:   make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	signal.Notify(s.sigch, syscall.SIGCHLD)
	go s.reapLoop()
	go s.nnpSpawner()
	return s
}

// Close ends the reap loop and the spawner (tests; PID 1 never closes it).
func (s *Supervisor) Close() {
	signal.Stop(s.sigch)
	close(s.done)
	<-s.reaped
}

func (s *Supervisor) reapLoop() {
	defer close(s.reaped)
	// A slow tick covers a SIGCHLD that raced with Notify at startup.
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-s.sigch:
		case <-tick.C:
		}
		s.reapAll()
	}
}

func (s *Supervisor) reapAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if ch, ok := s.procs[pid]; ok {
			delete(s.procs, pid)
			ch <- ws
			continue
		}
		s.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
	}
}

type spawnReq struct {
	path string
	argv []string
	attr *os.ProcAttr
	res  chan spawnRes
}

type spawnRes struct {
	p   *os.Process
	err error
}

// nnpSpawner owns one OS thread with PR_SET_NO_NEW_PRIVS set: a forked child
// inherits the flag from the forking thread, and the Go runtime never clones
// new threads from a locked thread (it uses its template thread), so the flag
// stays on this thread and PID 1 itself is unaffected. SysProcAttr has no
// no_new_privs field; this avoids a re-exec trampoline.
func (s *Supervisor) nnpSpawner() {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread can never exit, so the flag would stay on it (and
		// show in /proc/1/status). Hold the main thread here instead; the
		// spawner started below cannot be scheduled onto it while it is locked.
		go s.nnpSpawner()
		<-s.done
		runtime.UnlockOSThread()
		return
	}
	// Never unlocked: the thread exits with this goroutine.
	err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	for {
		select {
		case <-s.done:
			return
		case r := <-s.spawn:
			if err != nil {
				r.res <- spawnRes{err: fmt.Errorf("set no_new_privs: %w", err)}
				continue
			}
			p, perr := os.StartProcess(r.path, r.argv, r.attr)
			r.res <- spawnRes{p, perr}
		}
	}
}

// Start begins supervising svc. Names are unique.
func (s *Supervisor) Start(service Service) error {
	if service.Name == "" || service.Path == "" {
		return errors.New("supervise: service needs a name and a path")
	}
	s.mu.Lock()
	if _, ok := s.svcs[service.Name]; ok {
		s.mu.Unlock()
		return fmt.Errorf("supervise: service %q already exists", service.Name)
	}
	sv := &svc{Service: service, ring: NewRing(RingLines)}
	s.svcs[service.Name] = sv
	s.mu.Unlock()
	select {
	case <-s.stopping:
		return errors.New("supervise: stopping")
	default:
	}
	s.wg.Add(1)
	go s.run(sv)
	return nil
}

func (s *Supervisor) emit(e Event) {
	if s.events != nil {
		s.events <- e
	}
}

func (s *Supervisor) isStopping() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

func (s *Supervisor) run(sv *svc) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		if s.isStopping() {
			s.setDown(sv, 0)
			s.emit(Event{Service: sv.Name, Kind: Stopped})
			return
		}
		ws, pid, ran, err := s.once(sv)
		ev := Event{Service: sv.Name, Pid: pid, ExitCode: -1, Err: err}
		if err == nil {
			ev.ExitCode = ws.ExitStatus()
			if ws.Signaled() {
				ev.Signal = ws.Signal()
			}
		}
		switch {
		case s.isStopping():
			ev.Kind = Stopped
			s.setDown(sv, ev.ExitCode)
			s.log.Info("service stopped", "service", sv.Name, "exit", ev.ExitCode)
			s.emit(ev)
			return
		case err == nil && ev.ExitCode == ExitStayDown:
			ev.Kind = StayDown
			s.setDown(sv, ev.ExitCode)
			s.log.Warn("service exited 125: staying down", "service", sv.Name)
			s.emit(ev)
			return
		}
		delay = sv.Backoff.Next(delay, ran)
		ev.Kind, ev.Delay = Exited, delay
		sv.mu.Lock()
		sv.status.Running, sv.status.LastExit = false, ev.ExitCode
		sv.mu.Unlock()
		log := s.log.With("service", sv.Name, "exit", ev.ExitCode, "delay", delay)
		if ev.Signal != 0 {
			log = log.With("signal", ev.Signal.String())
		}
		if err != nil {
			log = log.With("err", err)
		}
		log.Warn("service exited: restarting")
		s.emit(ev)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.stopping:
			t.Stop()
		}
	}
}

func (s *Supervisor) setDown(sv *svc, code int) {
	sv.mu.Lock()
	sv.status.Running, sv.status.Down, sv.status.LastExit = false, true, code
	sv.mu.Unlock()
}

// once starts the service and waits for it to exit.
func (s *Supervisor) once(sv *svc) (ws unix.WaitStatus, pid int, ran time.Duration, err error) {
	var extra []*os.File
	if sv.Files != nil {
		if extra, err = sv.Files(); err != nil {
			return 0, 0, 0, fmt.Errorf("prepare files: %w", err)
		}
	}
	defer func() {
		for _, f := range extra {
			f.Close()
		}
	}()
	outR, outW, err := os.Pipe()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("output pipe: %w", err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		outR.Close()
		outW.Close()
		return 0, 0, 0, err
	}
	files := append([]*os.File{devnull, outW, outW}, extra...)
	attr := &os.ProcAttr{
		Dir:   sv.Dir,
		Env:   sv.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Setpgid:     true,
			Credential:  sv.Credential,
			AmbientCaps: sv.AmbientCaps,
		},
	}
	if attr.Env == nil {
		attr.Env = []string{}
	}
	argv := append([]string{sv.Path}, sv.Args...)

	waitch := make(chan unix.WaitStatus, 1)
	s.mu.Lock()
	var p *os.Process
	if sv.NoNewPrivs {
		// The parent-death signal follows the forking thread; this one lives
		// as long as the supervisor.
		attr.Sys.Pdeathsig = syscall.SIGKILL
		res := make(chan spawnRes, 1)
		select {
		case s.spawn <- spawnReq{sv.Path, argv, attr, res}:
			r := <-res
			p, err = r.p, r.err
		case <-s.done:
			err = errors.New("supervisor closed")
		}
	} else {
		p, err = os.StartProcess(sv.Path, argv, attr)
	}
	if err == nil {
		s.procs[p.Pid] = waitch
	}
	s.mu.Unlock()
	devnull.Close()
	outW.Close()
	if err != nil {
		outR.Close()
		return 0, 0, 0, fmt.Errorf("start %s: %w", sv.Path, err)
	}
	start := time.Now()
	pid = p.Pid
	// The reap loop waits; Release only drops the pidfd.
	p.Release()
	sv.mu.Lock()
	sv.status.Running, sv.status.Pid, sv.status.Down = true, pid, false
	sv.status.Starts++
	sv.mu.Unlock()
	s.log.Info("service started", "service", sv.Name, "pid", pid)
	s.emit(Event{Service: sv.Name, Kind: Started, Pid: pid})

	drained := make(chan struct{})
	go func() {
		defer close(drained)
		defer outR.Close()
		copyLines(outR, sv.ring, s.console, sv.Name)
	}()
	ws = <-waitch
	ran = time.Since(start)
	// The group is gone or detached; give the reader a moment to drain what
	// was written, but a grandchild that keeps the pipe open must not block
	// the restart.
	t := time.NewTimer(time.Second)
	select {
	case <-drained:
	case <-t.C:
	}
	t.Stop()
	return ws, pid, ran, nil
}

// Signal sends sig to the service's whole process group.
func (s *Supervisor) Signal(name string, sig syscall.Signal) error {
	st, ok := s.Status(name)
	if !ok {
		return fmt.Errorf("supervise: no service %q", name)
	}
	if !st.Running || st.Pid <= 0 {
		return fmt.Errorf("supervise: service %q is not running", name)
	}
	if err := unix.Kill(-st.Pid, sig); err != nil {
		return fmt.Errorf("supervise: signal %s: %w", name, err)
	}
	return nil
}

// Status returns a snapshot of the named service.
func (s *Supervisor) Status(name string) (Status, bool) {
	s.mu.Lock()
	sv, ok := s.svcs[name]
	s.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.status, true
}

// Output returns the last lines the named service printed, oldest first.
func (s *Supervisor) Output(name string) []string {
	s.mu.Lock()
	sv, ok := s.svcs[name]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return sv.ring.Lines()
}

// Stop stops every service: SIGTERM to each process group, then SIGKILL
// when ctx is done. It returns once every service has exited.
func (s *Supervisor) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.signalAll(syscall.SIGTERM)
	all := make(chan struct{})
	go func() { s.wg.Wait(); close(all) }()
	select {
	case <-all:
		return nil
	case <-ctx.Done():
	}
	s.log.Warn("services did not stop in time: killing")
	s.signalAll(syscall.SIGKILL)
	<-all
	return fmt.Errorf("supervise: services killed after stop deadline: %w", ctx.Err())
}

func (s *Supervisor) signalAll(sig syscall.Signal) {
	s.mu.Lock()
	names := make([]string, 0, len(s.svcs))
	for n := range s.svcs {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		if st, _ := s.Status(n); st.Running && st.Pid > 0 {
			unix.Kill(-st.Pid, sig)
		}
	}
}
