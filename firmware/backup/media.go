package backup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// mediaRestoreKey (in the box-local state bucket) names the staging area
// of the last restore with media, written in the restore's transaction.
const mediaRestoreKey = "media-restore"

var errNoMedia = fmt.Errorf("%w: this box has no media store (recordings are disabled), so backups cannot include media", ErrBadRequest)

// untruncated ends a recording cut short by a power loss at what was
// written before: its audio is kept, as ReadAudio plays it.
type untruncated struct{ r io.Reader }

func (u untruncated) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if errors.Is(err, recording.ErrTruncated) {
		err = io.EOF
	}
	return n, err
}

// mediaManifest reads every recording through the media store (opened with
// this box's media key) and returns their manifest entries. A recording
// that cannot be opened or read (damaged, sealed under a lost key) is left
// out and logged: it would otherwise fail every backup.
func (s *Service) mediaManifest() ([]MediaInfo, error) {
	var out []MediaInfo
	for _, e := range s.cfg.Media.List("") {
		mi, err := s.hashRecording(e.ID)
		if err != nil {
			s.cfg.Log.Warn("backup: recording left out", "id", e.ID, "err", err)
			continue
		}
		out = append(out, mi)
	}
	// Ids in byte order: the parser refuses repeats by that order.
	sortMedia(out)
	return out, nil
}

func sortMedia(m []MediaInfo) {
	slices.SortFunc(m, func(a, b MediaInfo) int { return strings.Compare(a.ID, b.ID) })
}

func (s *Service) hashRecording(id string) (MediaInfo, error) {
	r, err := s.cfg.Media.Open(id)
	if err != nil {
		return MediaInfo{}, err
	}
	defer r.Close()
	meta := r.Meta()
	mi := MediaInfo{ID: id, Category: meta.Category, Codec: meta.Codec, SampleRate: meta.SampleRate,
		Created: meta.Created.UTC(), Label: meta.Label}
	if mi.SHA256, mi.Bytes, err = writeMediaChunks(io.Discard, id, untruncated{r}); err != nil {
		return MediaInfo{}, err
	}
	one := mi
	one.SHA256 = hex.EncodeToString(make([]byte, 32))
	if err := validateMedia([]MediaInfo{one}, s.cfg.Limits); err != nil {
		return MediaInfo{}, err
	}
	return mi, nil
}

// writeMedia writes one recording's chunks; it must be what mediaManifest
// hashed, or the backup is abandoned (a restore would refuse it).
func (s *Service) writeMedia(w io.Writer, mi MediaInfo) error {
	r, err := s.cfg.Media.Open(mi.ID)
	if err != nil {
		return fmt.Errorf("backup: recording %s: %w", mi.ID, err)
	}
	defer r.Close()
	sum, n, err := writeMediaChunks(w, mi.ID, untruncated{r})
	if err != nil {
		return fmt.Errorf("backup: recording %s: %w", mi.ID, err)
	}
	if sum != mi.SHA256 || n != mi.Bytes {
		return fmt.Errorf("backup: recording %s changed while the backup was made; try again", mi.ID)
	}
	return nil
}

// mediaStaging receives a restore's recordings.
type mediaStaging struct {
	*recording.Staging
	cur   *recording.StagedFile
	curID string
}

// stageMedia checks that the recordings of m fit this box and opens a
// staging area for them (nil when m has none). Nothing has changed when
// it refuses.
func (s *Service) stageMedia(m *Manifest) (*mediaStaging, error) {
	if len(m.Media) == 0 {
		return nil, nil
	}
	if s.cfg.Media == nil {
		return nil, fmt.Errorf("%w: the backup holds %d recordings and this box has no media store (recordings are disabled)", ErrBadRequest, len(m.Media))
	}
	var need int64
	for _, mi := range m.Media {
		need += recording.SealedSize(mi.Bytes, mediaMeta(&mi))
	}
	if err := s.cfg.Media.CheckRoom(need); err != nil {
		return nil, fmt.Errorf("%w: the backup's %d recordings do not fit: %w", ErrTooLarge, len(m.Media), err)
	}
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	st, err := s.cfg.Media.NewStaging(hex.EncodeToString(tok[:]))
	if err != nil {
		return nil, err
	}
	return &mediaStaging{Staging: st}, nil
}

func mediaMeta(mi *MediaInfo) recording.Meta {
	return recording.Meta{Codec: mi.Codec, SampleRate: mi.SampleRate, Created: mi.Created,
		Category: mi.Category, Label: mi.Label}
}

// mediaFunc seals each recording under this box's media key into the
// staging area.
func (ms *mediaStaging) mediaFunc() MediaFunc {
	if ms == nil {
		return nil
	}
	return func(mi *MediaInfo, chunk []byte, end bool) error {
		if ms.cur == nil || ms.curID != mi.ID {
			if ms.cur != nil {
				ms.cur.Close()
				return fmt.Errorf("%w: recording %s ended without its end", ErrCorrupt, ms.curID)
			}
			f, err := ms.Create(mi.ID, mediaMeta(mi))
			if err != nil {
				return fmt.Errorf("backup: stage recording %s: %w", mi.ID, err)
			}
			ms.cur, ms.curID = f, mi.ID
		}
		if !end {
			_, err := ms.cur.Write(chunk)
			return err
		}
		err := ms.cur.Close()
		ms.cur = nil
		if err != nil {
			return fmt.Errorf("backup: stage recording %s: %w", mi.ID, err)
		}
		return nil
	}
}

// recoverMedia finishes or undoes what a restore with media left behind
// when the daemon stopped between the store's commit and the move of the
// recordings: a staging area the store names (the restore committed) is
// moved into place, any other (the restore did not commit) is removed.
func (s *Service) recoverMedia() {
	tokens, err := s.cfg.Media.StagingTokens()
	if err != nil || len(tokens) == 0 {
		if err != nil {
			s.cfg.Log.Error("backup: staged recordings", "err", err)
		}
		return
	}
	var want string
	if err := s.cfg.DB.View(func(tx *store.Tx) error {
		_, err := tx.Get(stateBucket, mediaRestoreKey, &want)
		return err
	}); err != nil {
		s.cfg.Log.Error("backup: staged recordings", "err", err)
		return
	}
	for _, t := range tokens {
		if t == want {
			err = s.cfg.Media.CommitStaging(t)
			s.cfg.Log.Warn("backup: recordings of the last restore moved into place", "err", err)
		} else {
			err = s.cfg.Media.DropStaging(t)
			s.cfg.Log.Warn("backup: recordings of an unfinished restore removed", "err", err)
		}
	}
}
