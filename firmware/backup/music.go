package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Music on hold: the classes the admin uploaded (files under /data/moh,
// not in the store) travel in every backup as the records of one more
// bucket, musicBucket, inside the same encryption and under the same
// manifest hash as the store's buckets. A restore checks every class with
// the library's own WAV parser before anything changes, and after the
// store's commit makes the library hold exactly the backup's classes. A
// backup without that bucket (made before, or on a box without music on
// hold) leaves the library alone.

// musicBucket is the name of the music records in the backup stream; it is
// never a bucket of the store.
const musicBucket = "moh.files"

// Bounds of the music records: a class of at most 16 MiB (moh.MaxBytes) in
// parts of musicChunk, at most maxMusicClasses classes (moh.MaxClasses).
const (
	musicChunk      = 4 << 20
	maxMusicParts   = 4
	maxMusicClasses = 16
)

// Music is the music-on-hold library (*moh.Library).
type Music interface {
	// Uploaded lists the uploaded classes; File reads one's stored WAV.
	Uploaded() ([]string, error)
	File(class string) ([]byte, error)
	// Check reports whether PutFile would accept file; nothing changes.
	Check(class string, file []byte) error
	PutFile(class string, file []byte) error
	Delete(class string) error
}

// musicPart is one record's value: part of a class's file.
type musicPart struct {
	Parts int    `json:"parts"`
	Data  []byte `json:"data"`
}

var musicKeyRE = regexp.MustCompile(`^([a-z0-9][a-z0-9_-]{0,31})/([0-9]{4})$`)

// musicRecords calls fn with each music record in key order: classes
// sorted as their keys are ("a-b/" before "a/"), each one's parts in turn.
func (s *Service) musicRecords(fn func(k, v []byte) error) error {
	classes, err := s.cfg.Music.Uploaded()
	if err != nil {
		return fmt.Errorf("backup: music on hold: %w", err)
	}
	if len(classes) > maxMusicClasses {
		return fmt.Errorf("backup: %w: %d music classes (max %d)", ErrTooLarge, len(classes), maxMusicClasses)
	}
	slices.SortFunc(classes, func(a, b string) int { return strings.Compare(a+"/", b+"/") })
	for _, c := range classes {
		file, err := s.cfg.Music.File(c)
		if err != nil {
			return fmt.Errorf("backup: music on hold class %s: %w", c, err)
		}
		parts := max(1, (len(file)+musicChunk-1)/musicChunk)
		if parts > maxMusicParts {
			return fmt.Errorf("backup: %w: music class %s of %d bytes", ErrTooLarge, c, len(file))
		}
		for i := range parts {
			v, err := json.Marshal(musicPart{Parts: parts, Data: file[i*musicChunk : min(len(file), (i+1)*musicChunk)]})
			if err != nil {
				return err
			}
			if err := fn(fmt.Appendf(nil, "%s/%04d", c, i), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// musicInfo is the manifest entry of the music records.
func (s *Service) musicInfo() (BucketInfo, error) {
	bh := newBucketHash(musicBucket)
	err := s.musicRecords(func(k, v []byte) error { bh.add(k, v); return nil })
	return bh.info(), err
}

// writeMusic writes the music records; they must be what musicInfo hashed,
// or the backup is abandoned (a restore would refuse it).
func (s *Service) writeMusic(w interface{ Write([]byte) (int, error) }, want BucketInfo) error {
	bh := newBucketHash(musicBucket)
	err := s.musicRecords(func(k, v []byte) error {
		bh.add(k, v)
		_, err := w.Write(frame(k, v))
		return err
	})
	if err != nil {
		return err
	}
	if bh.info() != want {
		return errors.New("backup: the music on hold changed while the backup was made; make it again")
	}
	return nil
}

// musicReader reassembles the music records of one parse, class by
// class, and hands each complete file to done.
type musicReader struct {
	class   string
	next    int
	parts   int
	buf     []byte
	classes int
	done    func(class string, file []byte) error
}

func (mr *musicReader) record(key string, val []byte) error {
	m := musicKeyRE.FindStringSubmatch(key)
	if m == nil {
		return fmt.Errorf("%w: %s/%.64q is not a music record", ErrFormat, musicBucket, key)
	}
	class := m[1]
	part, _ := strconv.Atoi(m[2])
	if class != mr.class {
		if mr.class != "" {
			return fmt.Errorf("%w: music class %s ends after %d of %d parts", ErrCorrupt, mr.class, mr.next, mr.parts)
		}
		if mr.classes++; mr.classes > maxMusicClasses {
			return fmt.Errorf("%w: more than %d music classes", ErrTooLarge, maxMusicClasses)
		}
		mr.class, mr.next, mr.parts, mr.buf = class, 0, 0, mr.buf[:0]
	}
	if part != mr.next {
		return fmt.Errorf("%w: music class %s: part %d where %d was due", ErrCorrupt, class, part, mr.next)
	}
	var p musicPart
	if err := strictjson.Unmarshal(val, &p); err != nil {
		return fmt.Errorf("%w: music class %s part %d: %v", ErrFormat, class, part, err)
	}
	if p.Parts < 1 || p.Parts > maxMusicParts || (mr.parts != 0 && p.Parts != mr.parts) || len(p.Data) > musicChunk {
		return fmt.Errorf("%w: music class %s part %d: %d parts, %d bytes", ErrFormat, class, part, p.Parts, len(p.Data))
	}
	mr.parts = p.Parts
	mr.buf = append(mr.buf, p.Data...)
	mr.next++
	if mr.next < mr.parts {
		return nil
	}
	class, file := mr.class, mr.buf
	mr.class = ""
	return mr.done(class, file)
}

// end reports a class left incomplete when its records stopped.
func (mr *musicReader) end() error {
	if mr.class != "" {
		return fmt.Errorf("%w: music class %s ends after %d of %d parts", ErrCorrupt, mr.class, mr.next, mr.parts)
	}
	return nil
}

// checkMusic is the first pass's check of one class: the library's parser
// must accept it (a box without music on hold checks only the format).
func (s *Service) checkMusic(class string, file []byte) error {
	if s.cfg.Music == nil {
		return nil
	}
	if err := s.cfg.Music.Check(class, file); err != nil {
		return fmt.Errorf("%w: music class %s: %v", ErrFormat, class, err)
	}
	return nil
}

// musicStaging holds a restore's classes in files until the store's
// commit (a class at a time in memory, as the parse hands them over).
type musicStaging struct {
	dir     string
	classes []string
}

func (s *Service) stageMusic() (*musicStaging, error) {
	dir, err := os.MkdirTemp(s.cfg.Dir, ".moh-restore-")
	if err != nil {
		return nil, fmt.Errorf("backup: music staging: %w", err)
	}
	return &musicStaging{dir: dir}, nil
}

func (ms *musicStaging) put(class string, file []byte) error {
	if err := os.WriteFile(filepath.Join(ms.dir, class+".wav"), file, 0o600); err != nil {
		return fmt.Errorf("backup: music staging: %w", err)
	}
	ms.classes = append(ms.classes, class)
	return nil
}

func (ms *musicStaging) drop() { _ = os.RemoveAll(ms.dir) }

// count is the number of classes staged (-1: the backup has none).
func (ms *musicStaging) count() int {
	if ms == nil {
		return -1
	}
	return len(ms.classes)
}

// applyMusic makes the library hold exactly the staged classes: the others
// go first (the library's class limit), then each staged one is stored
// through the upload parser.
func (s *Service) applyMusic(ms *musicStaging) error {
	defer ms.drop()
	if s.cfg.Music == nil {
		if len(ms.classes) > 0 {
			s.cfg.Log.Warn("backup: music on hold not restored: this box has none", "classes", len(ms.classes))
		}
		return nil
	}
	have, err := s.cfg.Music.Uploaded()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range have {
		if !slices.Contains(ms.classes, c) {
			if err := s.cfg.Music.Delete(c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, c := range ms.classes {
		file, err := os.ReadFile(filepath.Join(ms.dir, c+".wav"))
		if err == nil {
			err = s.cfg.Music.PutFile(c, file)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("class %s: %w", c, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backup: restored, but music on hold is not all in place: %w", err)
	}
	return nil
}
