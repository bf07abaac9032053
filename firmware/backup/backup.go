// Package backup makes and restores encrypted backups of the store:
// configuration, accounts, extensions, telephony, certificates, CDRs and the
// audit chain. A backup is an age stream (to an X25519 recipient whose
// identity the admin keeps off the box, or to a passphrase) holding a strict,
// versioned format (format.go). Sealed values travel in clear inside the
// encryption and are sealed again under the target box's device key, so a
// backup never depends on the key of the box that made it. On request
// (media.go) a backup also holds the recordings (voicemail audio, call
// recordings), opened with this box's media key and sealed again under the
// target box's on restore. Buckets that
// belong to the box itself (its licence state, sessions, logs, this
// package's settings) are never exported nor replaced, so a restore on
// another box does not clone that box's identity.
//
// The package owns the bucket "backup.settings" (recipient, schedule) and
// "backup.state" (what the last restore brought in, for the licence
// check-in) and the backup files under its directory.
package backup

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const (
	settingsBucket = "backup.settings"
	stateBucket    = "backup.state"
	// MinPassphrase is the shortest passphrase accepted for a backup.
	MinPassphrase = 12
	maxPassphrase = 256
	// scrypt's memory is 1 KiB × 2^workFactor and runs inside edgepbxd on
	// boxes with 512 MiB: age's default (18, 256 MiB) got the daemon
	// OOM-killed there. Passphrase backups are written with 16 (64 MiB;
	// with at least MinPassphrase characters the passphrase, not the
	// factor, is what resists guessing), and a restore refuses a file that
	// demands more than 17 (128 MiB) instead of letting a crafted upload
	// exhaust the box's memory.
	defaultWorkFactor = 16
	maxWorkFactor     = 17
)

// BoxLocal lists what a backup never carries and a restore never replaces:
// bucket name → keys kept (nil: the whole bucket).
type BoxLocal map[string][]string

// DefaultBoxLocal is the store's box-specific state: schema marker, licence
// binding and grace counters (a restore must not rewind them), sessions and
// pending login challenges (a restored cookie must not log in), the box's
// own event log, this package's settings and the self-signed certificate
// (it names the serial). The GeoIP database is public data of up to
// hundreds of megabytes that the admin uploads again; it would exceed the
// value bound a restore accepts.
func DefaultBoxLocal(certsBucket string, certsLocalKeys []string) BoxLocal {
	return BoxLocal{
		"meta":             nil,
		"license.state":    nil,
		"license.schedule": nil,
		"auth.sessions":    nil,
		"auth.challenges":  nil,
		"logs.events":      nil,
		"auth.geoip":       nil,
		settingsBucket:     nil,
		stateBucket:        nil,
		certsBucket:        certsLocalKeys,
	}
}

// Identity is the box making or receiving a backup.
type Identity struct {
	Serial    string
	InstallID string
	Firmware  string
}

// Config wires a Service.
type Config struct {
	DB        *store.DB
	Audit     *audit.Log
	Box       Identity
	Dir       string                    // where backup files are kept (created 0700)
	Resealers map[string]store.Resealer // bucket → sealed-field mover
	BoxLocal  BoxLocal
	Limits    Limits
	Now       func() time.Time
	Log       *slog.Logger
	// ScryptWorkFactor for passphrase backups; 0 is defaultWorkFactor.
	ScryptWorkFactor int
	// Media is the recordings store (voicemail audio, call recordings)
	// that backups with media read and restores write; nil: this box has
	// none and such backups and restores are refused.
	Media *recording.Store
	// Music is the music-on-hold library whose uploaded classes every
	// backup carries (music.go); nil: none.
	Music Music
}

// Service makes, lists and restores backups.
type Service struct {
	cfg      Config
	restored chan struct{} // signalled after a restore (Run returns)
	pushMu   sync.Mutex    // one upload to the remote targets at a time
}

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Audit == nil || cfg.Dir == "" {
		return nil, errors.New("backup: store, audit log and directory are required")
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: directory %s: %w", cfg.Dir, err)
	}
	s := &Service{cfg: cfg, restored: make(chan struct{}, 1)}
	if cfg.Media != nil {
		s.recoverMedia()
	}
	return s, nil
}

// Encryption says whom a new backup is for: exactly one of the two.
type Encryption struct {
	Recipient  string // "age1…" public key; empty: the box's configured one
	Passphrase string
	// Media includes the recordings (voicemail audio, call recordings):
	// off by default, they can be most of the box's data.
	Media bool
}

// Decryption opens a backup: an "AGE-SECRET-KEY-1…" identity or a passphrase.
type Decryption struct {
	Identity   string
	Passphrase string
}

func (s *Service) recipient(e Encryption) (age.Recipient, error) {
	switch {
	case e.Passphrase != "" && e.Recipient != "":
		return nil, fmt.Errorf("%w: give a recipient or a passphrase, not both", ErrBadRequest)
	case e.Passphrase != "":
		if len(e.Passphrase) < MinPassphrase || len(e.Passphrase) > maxPassphrase {
			return nil, fmt.Errorf("%w: passphrase must be %d-%d characters", ErrBadRequest, MinPassphrase, maxPassphrase)
		}
		r, err := age.NewScryptRecipient(e.Passphrase)
		if err != nil {
			return nil, fmt.Errorf("%w: passphrase: %v", ErrBadRequest, err)
		}
		wf := defaultWorkFactor
		if s.cfg.ScryptWorkFactor > 0 {
			wf = min(s.cfg.ScryptWorkFactor, maxWorkFactor)
		}
		r.SetWorkFactor(wf)
		return r, nil
	}
	rcpt := e.Recipient
	if rcpt == "" {
		st, err := s.Settings()
		if err != nil {
			return nil, err
		}
		if st.Recipient == "" {
			return nil, ErrNoKey
		}
		rcpt = st.Recipient
	}
	r, err := age.ParseX25519Recipient(rcpt)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient: %v", ErrBadRequest, err)
	}
	return r, nil
}

func (d Decryption) identity() (age.Identity, error) {
	switch {
	case d.Identity != "" && d.Passphrase != "":
		return nil, fmt.Errorf("%w: give a key or a passphrase, not both", ErrBadRequest)
	case d.Identity != "":
		if len(d.Identity) > 256 {
			return nil, fmt.Errorf("%w: key too long", ErrBadRequest)
		}
		id, err := age.ParseX25519Identity(strings.TrimSpace(d.Identity))
		if err != nil {
			return nil, fmt.Errorf("%w: key is not an age X25519 secret key (AGE-SECRET-KEY-1…)", ErrBadRequest)
		}
		return id, nil
	case d.Passphrase != "":
		if len(d.Passphrase) > maxPassphrase {
			return nil, fmt.Errorf("%w: passphrase too long", ErrBadRequest)
		}
		id, err := age.NewScryptIdentity(d.Passphrase)
		if err != nil {
			return nil, fmt.Errorf("%w: passphrase: %v", ErrBadRequest, err)
		}
		id.SetMaxWorkFactor(maxWorkFactor)
		return id, nil
	}
	return nil, fmt.Errorf("%w: a key or a passphrase is needed", ErrBadRequest)
}

func (s *Service) local(bucket string) (keys []string, whole bool) {
	k, ok := s.cfg.BoxLocal[bucket]
	return k, ok && k == nil
}

func (s *Service) keepKey(bucket, key string) bool {
	for _, k := range s.cfg.BoxLocal[bucket] {
		if k == key {
			return true
		}
	}
	return false
}

// Write makes a backup of the store into w, encrypted as e, from one read
// transaction, and returns its manifest. Sealed values are unsealed with
// this box's key and carried in clear inside the encryption.
func (s *Service) Write(w io.Writer, e Encryption) (*Manifest, error) {
	rcpt, err := s.recipient(e)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Format: FormatVersion, Serial: s.cfg.Box.Serial, InstallID: s.cfg.Box.InstallID,
		Firmware: s.cfg.Box.Firmware, Created: s.cfg.Now().UTC().Truncate(time.Second)}
	if e.Media {
		if s.cfg.Media == nil {
			return nil, errNoMedia
		}
		m.Format = FormatMedia
		// Hashed before the transaction: reading every recording may take
		// a while and must not hold the store's read transaction open.
		if m.Media, err = s.mediaManifest(); err != nil {
			return nil, err
		}
	}
	err = s.cfg.DB.View(func(tx *store.Tx) error {
		if m.Schema, err = tx.SchemaTx(); err != nil {
			return err
		}
		names, err := tx.Buckets()
		if err != nil {
			return err
		}
		// Pass 1: the manifest needs every bucket's hash before the data.
		for _, name := range names {
			if _, whole := s.local(name); whole || name == musicBucket {
				continue
			}
			bh := newBucketHash(name)
			if err := s.export(tx, name, func(k, v []byte) error { bh.add(k, v); return nil }); err != nil {
				return err
			}
			m.Buckets = append(m.Buckets, bh.info())
		}
		if s.cfg.Music != nil {
			// Present even when empty: the restore then removes uploads.
			bi, err := s.musicInfo()
			if err != nil {
				return err
			}
			m.Buckets = append(m.Buckets, bi)
			sort.Slice(m.Buckets, func(i, j int) bool { return m.Buckets[i].Name < m.Buckets[j].Name })
			m.Format = FormatMusic
		}
		if err := m.validate(s.cfg.Limits); err != nil {
			return fmt.Errorf("backup: this store exceeds what a restore accepts: %w", err)
		}
		enc, err := age.Encrypt(w, rcpt)
		if err != nil {
			return fmt.Errorf("backup: encrypt: %w", err)
		}
		if err := writeHeader(enc, m); err != nil {
			return fmt.Errorf("backup: write: %w", err)
		}
		for _, b := range m.Buckets {
			if b.Name == musicBucket {
				if err := s.writeMusic(enc, b); err != nil {
					return err
				}
				continue
			}
			if err := s.export(tx, b.Name, func(k, v []byte) error {
				_, err := enc.Write(frame(k, v))
				return err
			}); err != nil {
				return fmt.Errorf("backup: write: %w", err)
			}
		}
		for _, mi := range m.Media {
			if err := s.writeMedia(enc, mi); err != nil {
				return err
			}
		}
		return enc.Close()
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// export calls fn with each exported record of bucket, sealed fields opened.
func (s *Service) export(tx *store.Tx, bucket string, fn func(k, v []byte) error) error {
	reseal := s.cfg.Resealers[bucket]
	open := func(b []byte, ad string) ([]byte, error) { return s.cfg.DB.Unseal(b, ad) }
	lim := s.cfg.Limits
	return tx.ForEach(bucket, func(key string, raw []byte) error {
		if s.keepKey(bucket, key) {
			return nil
		}
		v := raw
		if reseal != nil {
			var err error
			if v, err = reseal(key, raw, open); err != nil {
				return fmt.Errorf("backup: open sealed values of %s/%s: %w", bucket, key, err)
			}
		}
		if len(key) > lim.MaxKeyBytes || len(v) > lim.MaxValueBytes {
			return fmt.Errorf("backup: %w: %s/%s (key %d, value %d bytes)", ErrTooLarge, bucket, key, len(key), len(v))
		}
		return fn([]byte(key), v)
	})
}

// Inspect decrypts and validates a backup file completely without changing
// anything, and returns its manifest.
func (s *Service) Inspect(path string, d Decryption) (*Manifest, error) {
	mr := &musicReader{done: s.checkMusic}
	m, err := s.parseFile(path, d, func(bucket, key string, val []byte) error {
		if bucket == musicBucket {
			return mr.record(key, val)
		}
		return s.checkRecord(bucket, key, val)
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := mr.end(); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Service) checkRecord(bucket, key string, val []byte) error {
	if _, whole := s.local(bucket); whole || s.keepKey(bucket, key) {
		return fmt.Errorf("%w: %s/%s", ErrBoxLocal, bucket, key)
	}
	if reseal := s.cfg.Resealers[bucket]; reseal != nil {
		// Decode and bound each sealed field as the restore will, so a value
		// that cannot be sealed again is refused now, not half-way.
		_, err := reseal(key, val, func(b []byte, _ string) ([]byte, error) {
			if len(b) > 1<<20 {
				return nil, fmt.Errorf("%w: secret of %d bytes", ErrTooLarge, len(b))
			}
			return b, nil
		})
		if err != nil {
			return fmt.Errorf("%w: %s/%s: %v", ErrFormat, bucket, key, err)
		}
	} else if !json.Valid(val) {
		return fmt.Errorf("%w: %s/%s is not JSON", ErrFormat, bucket, key)
	}
	return nil
}

func (s *Service) parseFile(path string, d Decryption, fn RecordFunc, mfn MediaFunc) (*Manifest, error) {
	id, err := d.identity()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("backup: stat %s: %w", path, err)
	}
	if fi.Size() > s.cfg.Limits.MaxFileBytes {
		return nil, fmt.Errorf("%w: file of %d bytes (max %d)", ErrTooLarge, fi.Size(), s.cfg.Limits.MaxFileBytes)
	}
	r, err := age.Decrypt(io.LimitReader(f, s.cfg.Limits.MaxFileBytes), id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, fmt.Errorf("%w: %v", ErrWrongKey, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	m, err := ParseMedia(authReader{r}, s.cfg.Limits, fn, mfn)
	if err != nil {
		return nil, err
	}
	if err := s.compatible(m); err != nil {
		return nil, err
	}
	return m, nil
}

func (s *Service) compatible(m *Manifest) error {
	have := store.SchemaVersion
	switch {
	case m.Schema > have:
		return fmt.Errorf("%w: backup has schema %d, this firmware knows %d: update the firmware first", ErrSchema, m.Schema, have)
	case m.Schema < have:
		return fmt.Errorf("%w: backup has schema %d, this firmware writes %d and has no migration for backups", ErrSchema, m.Schema, have)
	}
	return nil
}

// Restored is what the last restore brought in; the licence check-in
// reports it so the vendor can rebind the licence.
type Restored struct {
	FromSerial    string    `json:"from_serial"`
	FromInstallID string    `json:"from_install_id"`
	BackupCreated time.Time `json:"backup_created"`
	At            time.Time `json:"at"`
	OtherBox      bool      `json:"other_box"`
}

// Actor is who asked for an action, for the audit log.
type Actor struct{ Name, Source string }

// Restore replaces the store's data with the backup at path. It first
// decrypts and validates the whole file (manifest, schema, sizes, every
// bucket's hash, every sealed field) and changes nothing if any of it
// fails; then it replaces every bucket that is not box-local in one
// transaction, sealing secrets under this box's device key, and appends a
// restore entry to the restored audit chain. The caller restarts the
// services afterwards: their caches hold the old data.
func (s *Service) Restore(path string, d Decryption, who Actor) (*Manifest, error) {
	m, err := s.Inspect(path, d)
	if err != nil {
		s.auditFail(who, "backup.restore", err)
		return nil, err
	}
	staging, err := s.stageMedia(m)
	if err != nil {
		s.auditFail(who, "backup.restore", err)
		return nil, err
	}
	var music *musicStaging
	if slices.ContainsFunc(m.Buckets, func(b BucketInfo) bool { return b.Name == musicBucket }) {
		if music, err = s.stageMusic(); err != nil {
			s.auditFail(who, "backup.restore", err)
			return nil, err
		}
	}
	committed := false
	if music != nil {
		defer func() {
			if !committed {
				music.drop()
			}
		}()
	}
	if staging != nil {
		defer func() {
			if !committed {
				if staging.cur != nil {
					staging.cur.Close()
				}
				if err := staging.Drop(); err != nil {
					s.cfg.Log.Error("backup: drop staged recordings", "err", err)
				}
			}
		}()
	}
	db := s.cfg.DB
	seal := func(b []byte, ad string) ([]byte, error) { return db.Seal(b, ad) }
	other := m.Serial != s.cfg.Box.Serial || m.InstallID != s.cfg.Box.InstallID
	err = db.Update(func(tx *store.Tx) error {
		prev, err := s.cfg.Audit.HeadTx(tx)
		if err != nil {
			return err
		}
		archive, err := s.archiveChain(tx)
		if err != nil {
			return err
		}
		kept := map[string]map[string][]byte{}
		names, err := tx.Buckets()
		if err != nil {
			return err
		}
		for _, name := range names {
			keys, whole := s.local(name)
			if whole {
				continue
			}
			for _, k := range keys {
				var raw json.RawMessage
				if ok, err := tx.Get(name, k, &raw); err != nil {
					return err
				} else if ok {
					if kept[name] == nil {
						kept[name] = map[string][]byte{}
					}
					kept[name][k] = bytes.Clone(raw)
				}
			}
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		// The second pass skips the per-record checks of the first: equal
		// manifests (every bucket's SHA-256) mean the same content.
		mr := &musicReader{done: func(class string, file []byte) error { return music.put(class, file) }}
		m2, err := s.parseFile(path, d, func(bucket, key string, val []byte) error {
			if bucket == musicBucket {
				return mr.record(key, val)
			}
			v := val
			if reseal := s.cfg.Resealers[bucket]; reseal != nil {
				if v, err = reseal(key, val, seal); err != nil {
					return fmt.Errorf("backup: seal %s/%s: %w", bucket, key, err)
				}
			}
			return tx.PutRaw(bucket, key, v)
		}, staging.mediaFunc())
		if err != nil {
			return err
		}
		if staging != nil {
			// The staged recordings belong to this restore from its commit
			// on: a start that finds them moves them into place.
			if err := tx.Put(stateBucket, mediaRestoreKey, staging.Token()); err != nil {
				return err
			}
		}
		if !reflect.DeepEqual(m, m2) {
			return fmt.Errorf("%w: the file changed while it was restored", ErrCorrupt)
		}
		bs := sortedKeys(kept)
		for _, b := range bs {
			for k, v := range kept[b] {
				if err := tx.PutRaw(b, k, v); err != nil {
					return err
				}
			}
		}
		rec := Restored{FromSerial: m.Serial, FromInstallID: m.InstallID, BackupCreated: m.Created,
			At: s.cfg.Now().UTC(), OtherBox: other}
		if err := tx.Put(stateBucket, "restored", rec); err != nil {
			return err
		}
		detail := fmt.Sprintf("restored backup of box %s (install %s, firmware %s, made %s); chain before the restore ended at entry %d hash %s, kept in %s",
			m.Serial, m.InstallID, m.Firmware, m.Created.Format(time.RFC3339), prev.Seq, prev.Hash, archive)
		return s.cfg.Audit.RecordTx(tx, audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.restore",
			Target: m.Serial, Outcome: audit.OK, Detail: detail,
			After: map[string]any{"buckets": len(m.Buckets), "other_box": other, "recordings": len(m.Media), "music_classes": music.count()}})
	})
	if err != nil {
		s.auditFail(who, "backup.restore", err)
		return nil, err
	}
	committed = true
	var musicErr error
	if music != nil {
		musicErr = s.applyMusic(music)
	}
	if staging != nil {
		if err := s.cfg.Media.CommitStaging(staging.Token()); err != nil {
			return m, fmt.Errorf("backup: restored, but the recordings are not in place yet (moved at the next start): %w", err)
		}
	}
	if _, err := s.cfg.Audit.Rebase(); err != nil {
		return m, fmt.Errorf("backup: restored chain does not verify: %w", err)
	}
	s.cfg.Log.Warn("backup: restored", "from_serial", m.Serial, "other_box", other, "buckets", len(m.Buckets))
	select {
	case s.restored <- struct{}{}:
	default:
	}
	if musicErr != nil {
		s.cfg.Log.Error("backup: music on hold", "err", musicErr)
	}
	return m, musicErr
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (s *Service) auditFail(who Actor, action string, err error) {
	outcome := audit.Failed
	if errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrBoxLocal) {
		outcome = audit.Denied
	}
	if aerr := s.cfg.Audit.Record(audit.Event{Actor: who.Name, Source: who.Source, Action: action,
		Outcome: outcome, Detail: err.Error()}); aerr != nil {
		s.cfg.Log.Error("backup: audit", "err", aerr)
	}
}

// LastRestore reports the last restore, for the licence check-in.
func (s *Service) LastRestore() (Restored, bool, error) {
	var r Restored
	var ok bool
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(stateBucket, "restored", &r)
		return err
	})
	return r, ok, err
}

// authReader marks age's read errors (a chunk that fails authentication:
// tampered or truncated) as ErrCorrupt.
type authReader struct{ r io.Reader }

func (a authReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: decryption failed, the file is damaged or was modified: %w", ErrCorrupt, err)
	}
	return n, err
}

// archiveChain writes the audit chain a restore is about to replace to a
// file beside the backups (entries are redacted: no secrets), fsync'd
// before the restore commits, so no audit entry is lost to a restore.
func (s *Service) archiveChain(tx *store.Tx) (string, error) {
	name := "audit-replaced-" + s.cfg.Now().UTC().Format(fileTime) + ".jsonl"
	f, err := os.OpenFile(filepath.Join(s.cfg.Dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("backup: archive audit chain: %w", err)
	}
	w := bufio.NewWriter(f)
	err = tx.ForEach(audit.LogBucket, func(_ string, raw []byte) error {
		w.Write(raw)
		return w.WriteByte('\n')
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(s.cfg.Dir)
	}
	if err != nil {
		return "", fmt.Errorf("backup: archive audit chain: %w", err)
	}
	return name, nil
}
