// Package pgtest starts a real PostgreSQL (Debian's postgresql package)
// for tests: its own data directory, port on 127.0.0.1 and socket
// directory, run as an unprivileged user, removed by Stop.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoPostgres says the PostgreSQL server binaries are not installed.
var ErrNoPostgres = errors.New("pgtest: PostgreSQL server binaries not found (Debian: apt-get install postgresql)")

// Cluster is one running PostgreSQL server.
type Cluster struct {
	dir  string
	port int
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

// Options change the server's settings.
type Options struct {
	// Durable keeps fsync on (benchmarks); tests run without it.
	Durable bool
}

// binDir finds the newest /usr/lib/postgresql/N/bin, or initdb on PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(dirs[j]))))
		return vi > vj
	})
	if len(dirs) > 0 {
		return filepath.Dir(dirs[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoPostgres
}

// credential is who runs the server: PostgreSQL refuses root, so root
// runs it as the postgres user the Debian package creates.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start runs initdb into a fresh temporary directory and starts the
// server; it waits until the server accepts connections.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, log: &bytes.Buffer{}, done: make(chan struct{})}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgtest: initdb: %w\n%s", err, out))
	}
	// The port is free when chosen but another test process may take it
	// before postgres binds (packages' tests run in parallel): a bind
	// failure picks another port, a few times.
	for attempt := 1; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			return fail(err)
		}
		args := []string{"-D", data, "-p", strconv.Itoa(c.port), "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=32MB"}
		if !o.Durable {
			args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
		}
		c.log.Reset()
		c.done = make(chan struct{})
		c.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
		// Pdeathsig: a test binary that dies takes its server with it.
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		c.cmd.Stdout, c.cmd.Stderr = &lockedWriter{b: c.log}, &lockedWriter{b: c.log}
		if err := c.cmd.Start(); err != nil {
			return fail(fmt.Errorf("pgtest: postgres: %w", err))
		}
		done := c.done
		go func() { c.cmd.Wait(); close(done) }()
		err := c.wait(ctx)
		if err == nil {
			break
		}
		if attempt < 5 && strings.Contains(c.Log(), "could not bind") {
			c.cmd.Process.Kill() // keeps the data directory, unlike Stop
			<-done
			continue
		}
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("pgtest: postgres exited: %s", c.Log())
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready: %w: %s", err, c.Log())
		case <-tick.C:
		}
	}
}

// URL is the connection URL of database db.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// PID is the postmaster's process id (its children are the backends).
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// Port is the server's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Dir is the cluster's directory (data and socket).
func (c *Cluster) Dir() string { return c.dir }

// CreateDB makes an empty database and returns its URL.
func (c *Cluster) CreateDB(ctx context.Context, name string) (string, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// Log is what the server wrote.
func (c *Cluster) Log() string {
	w := c.cmd.Stdout.(*lockedWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return c.log.String()
}

// Stop shuts the server down (fast mode) and removes its directory.
func (c *Cluster) Stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
	}
	os.RemoveAll(c.dir)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

type lockedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Shared is one cluster for a test binary, started by the first test that
// asks for it; TestMain calls Stop after m.Run.
type Shared struct {
	mu  sync.Mutex
	c   *Cluster
	err error
	n   int
}

// DB starts the cluster if needed and returns the URL of a new database
// for t. Without PostgreSQL installed it skips t, except under CI (CI set),
// where it fails: CI must run the PostgreSQL suite.
func (s *Shared) DB(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil && s.err == nil {
		s.c, s.err = Start(context.Background(), Options{})
	}
	if errors.Is(s.err, ErrNoPostgres) && os.Getenv("CI") == "" {
		t.Skipf("PostgreSQL backend not tested: %v", s.err)
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	s.n++
	url, err := s.c.CreateDB(context.Background(), fmt.Sprintf("t%d", s.n))
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// Cluster is the started cluster, or nil.
func (s *Shared) Cluster() *Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c
}

// Stop stops the cluster if one was started.
func (s *Shared) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		s.c.Stop()
		s.c = nil
	}
}
