package recording

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Staging is where a restore writes recordings (sealed under this store's
// key, under the ids they had on the box that made the backup) before the
// store transaction that references them commits. Its directory lives
// inside the recordings directory (same file system: Commit is renames)
// under a name OpenStore never accounts nor lists.
type Staging struct {
	s     *Store
	token string
	dir   string
}

var tokenRE = regexp.MustCompile(`^[0-9a-f]{16,64}$`)

const stagingPrefix = ".staging-"

func (s *Store) stagingDir(token string) (string, error) {
	if !tokenRE.MatchString(token) {
		return "", fmt.Errorf("recording: staging token %q", token)
	}
	return filepath.Join(s.cfg.Dir, stagingPrefix+token), nil
}

// NewStaging creates an empty staging area named token (an existing one
// of that name is removed first).
func (s *Store) NewStaging(token string) (*Staging, error) {
	dir, err := s.stagingDir(token)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("recording: staging: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: staging: %w", err)
	}
	return &Staging{s: s, token: token, dir: dir}, nil
}

// CheckID validates a recording id as Open takes it and returns its
// category and creation time as encoded in the id.
func CheckID(id string) (category string, err error) {
	cat, name, ok := strings.Cut(id, "/")
	if !ok || !categoryRE.MatchString(cat) || !nameRE.MatchString(name) {
		return "", fmt.Errorf("%w: bad id %q", ErrNotFound, id)
	}
	return cat, nil
}

// Create starts the staged recording id, sealed under the store's current
// key. meta.Category must be the id's category. The caller closes it.
func (st *Staging) Create(id string, meta Meta) (*StagedFile, error) {
	cat, err := CheckID(id)
	if err != nil {
		return nil, err
	}
	if meta.Category != cat {
		return nil, fmt.Errorf("recording: staged %s: category %q does not match the id", id, meta.Category)
	}
	name := id[len(cat)+1:]
	if err := os.MkdirAll(filepath.Join(st.dir, cat), 0o700); err != nil {
		return nil, fmt.Errorf("recording: staging: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(st.dir, cat, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: staging: %w", err)
	}
	w, err := NewWriter(f, st.s.cfg.Keys, meta, 0)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &StagedFile{f: f, Writer: w}, nil
}

// StagedFile is a recording being staged.
type StagedFile struct {
	*Writer
	f *os.File
}

// Close seals the final chunk, syncs and closes the file.
func (sf *StagedFile) Close() error {
	err := sf.Writer.Close()
	if serr := sf.f.Sync(); err == nil {
		err = serr
	}
	if cerr := sf.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Token names the staging area.
func (st *Staging) Token() string { return st.token }

// Drop removes the staging area and what it holds.
func (st *Staging) Drop() error { return st.s.DropStaging(st.token) }

// StagingTokens lists the staging areas left in the directory (by a
// restore that crashed or was refused).
func (s *Store) StagingTokens() ([]string, error) {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	var out []string
	for _, e := range ents {
		if t, ok := strings.CutPrefix(e.Name(), stagingPrefix); ok && e.IsDir() && tokenRE.MatchString(t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// DropStaging removes the staging area token.
func (s *Store) DropStaging(token string) error {
	dir, err := s.stagingDir(token)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("recording: drop staging: %w", err)
	}
	return syncPath(s.cfg.Dir)
}

// CommitStaging moves every staged recording of token into place
// (replacing a recording of the same id) and removes the area. It is
// idempotent: after a crash half-way, calling it again moves the rest.
func (s *Store) CommitStaging(token string) error {
	dir, err := s.stagingDir(token)
	if err != nil {
		return err
	}
	cats, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("recording: commit staging: %w", err)
	}
	for _, c := range cats {
		if !c.IsDir() || !categoryRE.MatchString(c.Name()) {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			return fmt.Errorf("recording: commit staging: %w", err)
		}
		dst := filepath.Join(s.cfg.Dir, c.Name())
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return fmt.Errorf("recording: commit staging: %w", err)
		}
		for _, f := range files {
			if !f.Type().IsRegular() || !nameRE.MatchString(f.Name()) {
				continue
			}
			info, err := f.Info()
			if err != nil {
				return fmt.Errorf("recording: commit staging: %w", err)
			}
			if err := os.Rename(filepath.Join(dir, c.Name(), f.Name()), filepath.Join(dst, f.Name())); err != nil {
				return fmt.Errorf("recording: commit staging: %w", err)
			}
			id := c.Name() + "/" + f.Name()
			s.mu.Lock()
			s.used += info.Size() - s.files[id]
			s.files[id] = info.Size()
			s.checkWarnLocked()
			s.mu.Unlock()
		}
		if err := syncPath(dst); err != nil {
			return err
		}
	}
	return s.DropStaging(token)
}

// CheckRoom says whether n more bytes of recordings fit the quota and
// the free-space floor now, with the figures when they do not.
func (s *Store) CheckRoom(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.refreshAvail(); err != nil {
		return err
	}
	if lim := s.limitLocked(); s.used+n > lim {
		return fmt.Errorf("%w: %d bytes needed, %d of %d bytes used (quota %d, %d bytes kept free on the file system)",
			ErrQuota, n, s.used, lim, s.cfg.Quota, s.cfg.MinFree)
	}
	return nil
}

// SealedSize is an upper bound of the file size of a recording holding
// audio bytes of audio and metadata m (header, metadata chunk, chunk
// framing and tags, final chunk).
func SealedSize(audio int64, m Meta) int64 {
	const perChunk = 4 + 16
	meta := int64(13 + 6 + len(m.Codec) + len(m.Category) + len(m.Label))
	return headerSize + perChunk + meta + (audio/DefaultChunkSize+2)*perChunk + audio
}

func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("recording: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("recording: sync %s: %w", dir, err)
	}
	return nil
}
