package recording

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRetention is how long a category's recordings are kept unless
// configured otherwise: six months.
const DefaultRetention = 183 * 24 * time.Hour

// ErrQuota is returned when a recording would exceed the quota or eat
// into the free space the file system must keep.
var ErrQuota = errors.New("recording: storage quota reached")

// ErrNotFound is returned for an ID that names no recording.
var ErrNotFound = errors.New("recording: no such recording")

var (
	categoryRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	nameRE     = regexp.MustCompile(`^([0-9]{1,20})-([0-9a-f]{16})\.rec$`)
)

// Config of a Store.
type Config struct {
	Dir  string // e.g. /data/recordings; created 0700
	Keys Keys
	// Quota is the bytes all recordings may use together.
	Quota int64
	// WarnFraction of the limit raises the warning (default 0.8).
	WarnFraction float64
	// MinFree is kept free on the file system whatever the quota says, so
	// recordings never fill /data (default 128 MiB).
	MinFree int64
	// Retention per category; DefaultRetention for the others.
	Retention map[string]time.Duration
	Logger    *slog.Logger
}

// Usage is the quota state for the UI and metrics.
type Usage struct {
	Used    int64 // bytes in recordings
	Limit   int64 // min(quota, used + free space - MinFree)
	Warning bool  // Used >= WarnFraction * Limit
	Full    bool  // new recordings are refused
	Files   int
}

// Entry is one stored recording as listed (without opening it).
type Entry struct {
	ID       string // "<category>/<name>": what Open and Delete take
	Category string
	Created  time.Time
	Size     int64
}

// Store owns the recordings directory. Safe for concurrent use.
type Store struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	used  int64
	files map[string]int64 // ID -> size on disk
	avail int64            // file system bytes available at the last check
	since int64            // bytes charged since that check
	warn  bool
}

// statEvery is how many bytes may be written between free-space checks.
const statEvery = 1 << 20

// OpenStore opens (creating) the directory and accounts the recordings
// already in it.
func OpenStore(cfg Config) (*Store, error) {
	if cfg.Keys == nil {
		return nil, errors.New("recording: no keys")
	}
	if cfg.Quota <= 0 {
		return nil, errors.New("recording: quota must be positive")
	}
	if cfg.WarnFraction <= 0 || cfg.WarnFraction >= 1 {
		cfg.WarnFraction = 0.8
	}
	if cfg.MinFree <= 0 {
		cfg.MinFree = 128 << 20
	}
	for c, d := range cfg.Retention {
		if !categoryRE.MatchString(c) || d <= 0 {
			return nil, fmt.Errorf("recording: retention %q: %v", c, d)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	s := &Store{cfg: cfg, log: log, files: make(map[string]int64)}
	err := filepath.WalkDir(cfg.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path == cfg.Dir {
			return nil
		}
		id, ok := s.idOf(path)
		if !ok {
			return nil // not ours; never charged, never deleted
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s.files[id] = info.Size()
		s.used += info.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recording: scan %s: %w", cfg.Dir, err)
	}
	if err := s.refreshAvail(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) idOf(path string) (string, bool) {
	rel, err := filepath.Rel(s.cfg.Dir, path)
	if err != nil {
		return "", false
	}
	cat, name, ok := strings.Cut(filepath.ToSlash(rel), "/")
	if !ok || !categoryRE.MatchString(cat) || !nameRE.MatchString(name) {
		return "", false
	}
	return cat + "/" + name, true
}

// path validates an ID and returns its file path.
func (s *Store) path(id string) (string, string, time.Time, error) {
	cat, name, ok := strings.Cut(id, "/")
	if !ok || !categoryRE.MatchString(cat) {
		return "", "", time.Time{}, fmt.Errorf("%w: bad id", ErrNotFound)
	}
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return "", "", time.Time{}, fmt.Errorf("%w: bad id", ErrNotFound)
	}
	ns, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return "", "", time.Time{}, fmt.Errorf("%w: bad id", ErrNotFound)
	}
	return filepath.Join(s.cfg.Dir, cat, name), cat, time.Unix(0, ns).UTC(), nil
}

func (s *Store) refreshAvail() error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.Dir, &st); err != nil {
		return fmt.Errorf("recording: statfs %s: %w", s.cfg.Dir, err)
	}
	s.avail = int64(st.Bavail) * int64(st.Bsize)
	s.since = 0
	return nil
}

// limitLocked is the most s.used may reach now.
func (s *Store) limitLocked() int64 {
	return min(s.cfg.Quota, s.used+s.avail-s.since-s.cfg.MinFree)
}

func (s *Store) usageLocked() Usage {
	lim := s.limitLocked()
	return Usage{
		Used: s.used, Limit: lim, Files: len(s.files),
		Warning: float64(s.used) >= s.cfg.WarnFraction*float64(lim),
		Full:    s.used+int64(DefaultChunkSize)*4 > lim,
	}
}

// Usage returns the quota state.
func (s *Store) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usageLocked()
}

// charge accounts n bytes about to be written to id. The final chunk is
// let through past the quota (it is at most one chunk) so a stopped
// recording still closes cleanly; MinFree leaves room for it.
func (s *Store) charge(id string, n int64, final bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since >= statEvery {
		if err := s.refreshAvail(); err != nil {
			return err
		}
	}
	if !final && s.used+n > s.limitLocked() {
		return fmt.Errorf("%w: %d of %d bytes used", ErrQuota, s.used, s.limitLocked())
	}
	s.used += n
	s.since += n
	s.files[id] += n
	s.checkWarnLocked()
	return nil
}

func (s *Store) checkWarnLocked() {
	u := s.usageLocked()
	if u.Warning && !s.warn {
		s.log.Warn("recording storage nearly full", "used", u.Used, "limit", u.Limit, "files", u.Files)
	}
	s.warn = u.Warning
}

// File is a recording being written.
type File struct {
	s    *Store
	id   string
	f    *os.File
	w    *Writer
	err  error
	done bool
}

// ID names the recording for Open, Delete and the UI.
func (f *File) ID() string { return f.id }

type chargedWriter struct {
	f     *File
	final bool
}

func (c *chargedWriter) Write(p []byte) (int, error) {
	if err := c.f.s.charge(c.f.id, int64(len(p)), c.final); err != nil {
		return 0, err
	}
	return c.f.f.Write(p)
}

// Create starts a recording in category. Meta.Category and Created are
// filled in.
func (s *Store) Create(category string, meta Meta) (*File, error) {
	if !categoryRE.MatchString(category) {
		return nil, fmt.Errorf("recording: category %q: lower-case letters, digits and dashes", category)
	}
	s.mu.Lock()
	if err := s.refreshAvail(); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	u := s.usageLocked()
	s.mu.Unlock()
	if u.Full {
		return nil, fmt.Errorf("%w: %d of %d bytes used", ErrQuota, u.Used, u.Limit)
	}
	if meta.Created.IsZero() {
		meta.Created = time.Now()
	}
	meta.Category = category
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%d-%s.rec", meta.Created.UnixNano(), hex.EncodeToString(rnd[:]))
	dir := filepath.Join(s.cfg.Dir, category)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	osf, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: create: %w", err)
	}
	f := &File{s: s, id: category + "/" + name, f: osf}
	s.mu.Lock()
	s.files[f.id] = 0
	s.mu.Unlock()
	cw := &chargedWriter{f: f}
	if f.w, err = NewWriter(cw, s.cfg.Keys, meta, 0); err != nil {
		osf.Close()
		s.Delete(f.id)
		return nil, err
	}
	return f, nil
}

// Write appends sealed audio. After ErrQuota the recording is stopped:
// Close it (it stays readable up to where it stopped).
func (f *File) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.w.Write(p)
	if err != nil {
		f.err = err
	}
	return n, err
}

// Close seals the final chunk, syncs and closes the file.
func (f *File) Close() error {
	if f.done {
		return nil
	}
	f.done = true
	f.w.w.(*chargedWriter).final = true
	err := f.w.Close()
	if serr := f.f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recording: close %s: %w", f.id, err)
	}
	return nil
}

// ReadCloser is an opened recording.
type ReadCloser struct {
	*Reader
	f *os.File
}

// Close closes the file.
func (r *ReadCloser) Close() error { return r.f.Close() }

// Open opens a recording for playback or download (the caller audits who
// asked).
func (s *Store) Open(id string) (*ReadCloser, error) {
	p, _, _, err := s.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return nil, fmt.Errorf("recording: open: %w", err)
	}
	r, err := NewReader(f, s.cfg.Keys)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ReadCloser{Reader: r, f: f}, nil
}

// Delete crypto-erases and removes a recording: the salt in its header
// is overwritten and synced before the file is unlinked, so no copy of
// the file's blocks can be decrypted again.
func (s *Store) Delete(id string) error {
	p, _, _, err := s.path(id)
	if err != nil {
		return err
	}
	if err := erase(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return fmt.Errorf("recording: erase %s: %w", id, err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("recording: remove %s: %w", id, err)
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		d.Sync()
		d.Close()
	}
	s.mu.Lock()
	s.used -= s.files[id]
	delete(s.files, id)
	s.checkWarnLocked()
	s.mu.Unlock()
	return nil
}

// erase overwrites the file's salt in place and syncs it: the file key
// cannot be derived any more.
func erase(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < saltOffset+32 {
		return nil
	}
	if _, err := f.WriteAt(make([]byte, 32), saltOffset); err != nil {
		return err
	}
	return f.Sync()
}

// List returns the recordings of a category ("" for all), oldest first.
func (s *Store) List(category string) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for id, size := range s.files {
		_, cat, created, err := s.path(id)
		if err != nil || (category != "" && cat != category) {
			continue
		}
		out = append(out, Entry{ID: id, Category: cat, Created: created, Size: size})
	}
	slices.SortFunc(out, func(a, b Entry) int { return a.Created.Compare(b.Created) })
	return out
}

// Retention returns the retention of a category.
func (s *Store) Retention(category string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.cfg.Retention[category]; ok {
		return d
	}
	return DefaultRetention
}

// Sweep deletes every recording older than its category's retention at
// now, and returns how many it deleted.
func (s *Store) Sweep(now time.Time) (int, error) {
	var errs []error
	n := 0
	for _, e := range s.List("") {
		if now.Sub(e.Created) <= s.Retention(e.Category) {
			continue
		}
		if err := s.Delete(e.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	if n > 0 {
		s.log.Info("recording retention sweep", "deleted", n)
	}
	return n, errors.Join(errs...)
}

// Run sweeps every interval until ctx ends.
func (s *Store) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := s.Sweep(time.Now()); err != nil {
			s.log.Error("recording retention sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
