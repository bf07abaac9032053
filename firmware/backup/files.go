package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Kinds of backup file; the scheduled ones are pruned to their retention
// count, manual ones to MaxManual.
const (
	Daily   = "daily"
	Weekly  = "weekly"
	Monthly = "monthly"
	Manual  = "manual"
	// MaxManual on-demand backups are kept; the oldest goes first.
	MaxManual    = 10
	maxUploads   = 2
	maxRetention = 60
	fileTime     = "20060102T150405Z"
)

var fileRE = regexp.MustCompile(`^edgepbx-([A-Za-z0-9._+-]{1,128})-(daily|weekly|monthly|manual)-(\d{8}T\d{6}Z)\.age$`)

// ErrNotFound means no backup file has that name.
var ErrNotFound = errors.New("backup: no such backup")

// Settings are the schedule and the recipient of scheduled backups. Only the
// public recipient is stored: its identity never touches the box's disk.
type Settings struct {
	Recipient string `json:"recipient"`
	Daily     int    `json:"daily"` // how many to keep; 0 turns the schedule off
	Weekly    int    `json:"weekly"`
	Monthly   int    `json:"monthly"`
	// Media puts the recordings (voicemail audio, call recordings) into
	// the scheduled backups; off by default for their size.
	Media bool `json:"media"`
}

func (s *Service) validateSettings(st Settings) error {
	if st.Media && s.cfg.Media == nil {
		return errNoMedia
	}
	return st.validate()
}

func (st Settings) validate() error {
	for name, n := range map[string]int{"daily": st.Daily, "weekly": st.Weekly, "monthly": st.Monthly} {
		if n < 0 || n > maxRetention {
			return fmt.Errorf("%w: field %s: keep 0-%d backups", ErrBadRequest, name, maxRetention)
		}
	}
	if st.Recipient != "" {
		if _, err := age.ParseX25519Recipient(st.Recipient); err != nil {
			return fmt.Errorf("%w: field recipient: not an age X25519 recipient (age1…)", ErrBadRequest)
		}
	}
	if st.Recipient == "" && st.Daily+st.Weekly+st.Monthly > 0 {
		return fmt.Errorf("%w: field recipient: scheduled backups need a backup key", ErrBadRequest)
	}
	return nil
}

// Settings returns the stored settings (zero: no key, no schedule).
func (s *Service) Settings() (Settings, error) {
	var st Settings
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		_, err := tx.Get(settingsBucket, "settings", &st)
		return err
	})
	return st, err
}

// SetSettings validates and stores st; the caller has re-authenticated.
func (s *Service) SetSettings(st Settings, who Actor) error {
	if err := s.validateSettings(st); err != nil {
		return err
	}
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		var old Settings
		if _, err := tx.Get(settingsBucket, "settings", &old); err != nil {
			return err
		}
		if err := tx.Put(settingsBucket, "settings", st); err != nil {
			return err
		}
		return s.cfg.Audit.RecordTx(tx, audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.settings",
			Before: old, After: st})
	})
}

// GenerateKey makes a new X25519 backup key, stores its public recipient
// for scheduled backups and returns the secret identity, which is shown
// once and never stored: the admin keeps it off the box.
func (s *Service) GenerateKey(who Actor) (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", fmt.Errorf("backup: generate key: %w", err)
	}
	recipient = id.Recipient().String()
	err = s.cfg.DB.Update(func(tx *store.Tx) error {
		var st Settings
		if _, err := tx.Get(settingsBucket, "settings", &st); err != nil {
			return err
		}
		old := st.Recipient
		st.Recipient = recipient
		if err := tx.Put(settingsBucket, "settings", st); err != nil {
			return err
		}
		return s.cfg.Audit.RecordTx(tx, audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.key.generate",
			Detail: "new backup recipient " + recipient + " (was " + old + ")"})
	})
	if err != nil {
		return "", "", err
	}
	return id.String(), recipient, nil
}

// File is one backup kept on the box.
type File struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"`
	Created time.Time `json:"created"`
	Size    int64     `json:"size"`
}

// List returns the backup files, newest first.
func (s *Service) List() ([]File, error) {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("backup: list %s: %w", s.cfg.Dir, err)
	}
	var out []File
	for _, e := range ents {
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		t, err := time.Parse(fileTime, m[3])
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, File{Name: e.Name(), Kind: m[2], Created: t, Size: fi.Size()})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Name > out[j].Name
	})
	return out, nil
}

func (s *Service) path(name string) (string, error) {
	if !fileRE.MatchString(name) {
		return "", fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return filepath.Join(s.cfg.Dir, name), nil
}

// Open opens a backup file for download.
func (s *Service) Open(name string) (*os.File, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return f, err
}

// Delete removes a backup file.
func (s *Service) Delete(name string, who Actor) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		return fmt.Errorf("backup: delete %s: %w", name, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		return err
	}
	return s.cfg.Audit.Record(audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.delete", Target: name})
}

// Create writes a backup of kind into the directory: a temporary file,
// fsync'd, renamed into place, directory fsync'd, so a power cut leaves the
// old set of files or the new one. It then prunes kind to its retention.
func (s *Service) Create(kind string, e Encryption, who Actor) (File, error) {
	f, err := s.create(kind, e)
	outcome, detail := audit.OK, ""
	if err != nil {
		outcome, detail = audit.Failed, err.Error()
	}
	if aerr := s.cfg.Audit.Record(audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.create",
		Target: f.Name, Outcome: outcome, Detail: detail}); aerr != nil && err == nil {
		err = aerr
	}
	return f, err
}

func (s *Service) create(kind string, e Encryption) (File, error) {
	now := s.cfg.Now().UTC()
	name := fmt.Sprintf("edgepbx-%s-%s-%s.age", s.cfg.Box.Serial, kind, now.Format(fileTime))
	if !fileRE.MatchString(name) {
		return File{}, fmt.Errorf("%w: backup kind %q", ErrBadRequest, kind)
	}
	final := filepath.Join(s.cfg.Dir, name)
	if _, err := os.Stat(final); err == nil {
		return File{}, fmt.Errorf("%w: a %s backup was made this second already", ErrBadRequest, kind)
	}
	tmp, err := os.CreateTemp(s.cfg.Dir, ".tmp-*")
	if err != nil {
		return File{}, fmt.Errorf("backup: create: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := s.Write(tmp, e); err != nil {
		tmp.Close()
		return File{}, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return File{}, fmt.Errorf("backup: sync: %w", err)
	}
	size, _ := tmp.Seek(0, io.SeekCurrent)
	if err := tmp.Close(); err != nil {
		return File{}, fmt.Errorf("backup: close: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return File{}, fmt.Errorf("backup: rename: %w", err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		return File{}, err
	}
	f := File{Name: name, Kind: kind, Created: now.Truncate(time.Second), Size: size}
	return f, s.prune(kind)
}

func (s *Service) keep(kind string) (int, error) {
	if kind == Manual {
		return MaxManual, nil
	}
	st, err := s.Settings()
	if err != nil {
		return 0, err
	}
	return map[string]int{Daily: st.Daily, Weekly: st.Weekly, Monthly: st.Monthly}[kind], nil
}

// prune removes the oldest files of kind beyond its retention count.
func (s *Service) prune(kind string) error {
	keep, err := s.keep(kind)
	if err != nil {
		return err
	}
	files, err := s.List()
	if err != nil {
		return err
	}
	n := 0
	for _, f := range files {
		if f.Kind != kind {
			continue
		}
		if n++; n > keep {
			if err := os.Remove(filepath.Join(s.cfg.Dir, f.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("backup: prune %s: %w", f.Name, err)
			}
		}
	}
	return syncDir(s.cfg.Dir)
}

// Due says which scheduled kinds have no backup yet in the current UTC
// day, ISO week and month.
func Due(now time.Time, st Settings, files []File) []string {
	now = now.UTC()
	var out []string
	for _, k := range []struct {
		kind string
		keep int
		same func(a, b time.Time) bool
	}{
		{Daily, st.Daily, func(a, b time.Time) bool { return a.Format("20060102") == b.Format("20060102") }},
		{Weekly, st.Weekly, func(a, b time.Time) bool {
			ay, aw := a.ISOWeek()
			by, bw := b.ISOWeek()
			return ay == by && aw == bw
		}},
		{Monthly, st.Monthly, func(a, b time.Time) bool { return a.Format("200601") == b.Format("200601") }},
	} {
		if k.keep == 0 || st.Recipient == "" {
			continue
		}
		done := false
		for _, f := range files {
			if f.Kind == k.kind && k.same(f.Created, now) {
				done = true
				break
			}
		}
		if !done {
			out = append(out, k.kind)
		}
	}
	return out
}

// RunDue makes the scheduled backups that are due now.
func (s *Service) RunDue() error {
	st, err := s.Settings()
	if err != nil {
		return err
	}
	files, err := s.List()
	if err != nil {
		return err
	}
	var errs []error
	due := Due(s.cfg.Now(), st, files)
	for _, kind := range due {
		if _, err := s.Create(kind, Encryption{Media: st.Media}, Actor{Name: "schedule"}); err != nil {
			s.cfg.Log.Error("backup: scheduled backup", "kind", kind, "err", err)
			errs = append(errs, err)
		}
	}
	// New files go to the remote targets now; a target whose last upload
	// failed is tried again at each schedule check.
	if len(due) > 0 {
		errs = append(errs, s.Push(context.Background(), Actor{Name: "schedule"}))
	} else {
		errs = append(errs, s.retryFailed(context.Background()))
	}
	return errors.Join(errs...)
}

// ErrRestored ends Run after a restore: the services' caches hold the old
// data, so the daemon exits and its supervisor starts it again.
var ErrRestored = errors.New("backup: store restored, restarting the services")

// Run checks the schedule every interval until ctx ends (nil) or a
// restore happened (ErrRestored).
func (s *Service) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = s.RunDue()
		select {
		case <-ctx.Done():
			return nil
		case <-s.restored:
			return ErrRestored
		case <-t.C:
		}
	}
}

var uploadRE = regexp.MustCompile(`^upload-[0-9]{1,20}$`)

// SaveUpload streams an uploaded backup to a private file under the
// directory, refusing more than MaxFileBytes, and returns its id for
// RestoreUpload. Nothing is parsed yet.
func (s *Service) SaveUpload(r io.Reader) (string, error) {
	p, err := s.saveUpload(r)
	if err != nil {
		return "", err
	}
	return filepath.Base(p)[1:], nil
}

// RestoreUpload restores an upload saved by SaveUpload and removes it,
// whatever the outcome.
func (s *Service) RestoreUpload(id string, d Decryption, who Actor) (*Manifest, error) {
	if !uploadRE.MatchString(id) {
		return nil, fmt.Errorf("%w: field upload: no such upload", ErrBadRequest)
	}
	p := filepath.Join(s.cfg.Dir, "."+id)
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("%w: field upload: no such upload", ErrBadRequest)
	}
	defer os.Remove(p)
	return s.Restore(p, d, who)
}

// RestoreFile restores a backup kept on the box.
func (s *Service) RestoreFile(name string, d Decryption, who Actor) (*Manifest, error) {
	p, err := s.path(name)
	if err != nil {
		return nil, err
	}
	return s.Restore(p, d, who)
}

func (s *Service) saveUpload(r io.Reader) (string, error) {
	if s.dropStaleUploads() >= maxUploads {
		return "", fmt.Errorf("%w: %d uploads wait for a restore already (they expire after an hour)", ErrBadRequest, maxUploads)
	}
	f, err := os.CreateTemp(s.cfg.Dir, ".upload-*")
	if err == nil && !uploadRE.MatchString(filepath.Base(f.Name())[1:]) {
		f.Close()
		os.Remove(f.Name())
		err = errors.New("unexpected temporary name")
	}
	if err != nil {
		return "", fmt.Errorf("backup: upload: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(r, s.cfg.Limits.MaxFileBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > s.cfg.Limits.MaxFileBytes {
		err = fmt.Errorf("%w: upload larger than %d bytes", ErrTooLarge, s.cfg.Limits.MaxFileBytes)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("backup: upload: %w", err)
	}
	return f.Name(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
}

// dropStaleUploads removes uploads nobody restored within an hour, so
// abandoned uploads cannot fill the disk.
// It returns how many remain.
func (s *Service) dropStaleUploads() int {
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".upload-") {
			continue
		}
		if fi, err := e.Info(); err == nil && s.cfg.Now().Sub(fi.ModTime()) > time.Hour {
			os.Remove(filepath.Join(s.cfg.Dir, e.Name()))
			continue
		}
		n++
	}
	return n
}
