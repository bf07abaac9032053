package backup

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Remote targets: every backup the box keeps is also copied to an SFTP
// server and/or an S3-compatible bucket. Their settings live in the
// box-local settings bucket (a backup never carries them, a restore never
// replaces them); their credentials are sealed with the device key and
// never answered by the API.
const (
	TargetSFTP = "sftp"
	TargetS3   = "s3"

	maxHostKey    = 16 << 10
	maxPrivateKey = 16 << 10
	maxCACert     = 32 << 10
	maxSecret     = 256
	// remoteTimeout bounds connecting and each small operation; an upload
	// runs as long as it makes progress (bounded by pushTimeout).
	remoteTimeout = 20 * time.Second
	pushTimeout   = 2 * time.Hour
	tmpPrefix     = ".edgepbx-tmp-"
)

// TargetKinds are the remote targets a box can have, one of each.
var TargetKinds = []string{TargetSFTP, TargetS3}

// TargetConfig is one remote target as the admin sets it. Credentials are
// apart (TargetSecrets): they are write-only.
type TargetConfig struct {
	Enabled bool `json:"enabled"`
	// Host is the SFTP server or the S3 endpoint (name or address, no scheme:
	// S3 is always HTTPS).
	Host string `json:"host"`
	Port int    `json:"port"` // 0: 22 for SFTP, 443 for S3
	// Path is the SFTP directory the backups go to (it must exist).
	Path   string `json:"path,omitempty"`
	Bucket string `json:"bucket,omitempty"` // S3 bucket (it must exist)
	Prefix string `json:"prefix,omitempty"` // S3 key prefix
	Region string `json:"region,omitempty"` // S3 region; empty: asked from the server
	// User is the SFTP user or the S3 access key id.
	User string `json:"user"`
	// HostKey pins the SFTP server's key (authorized_keys format). Empty:
	// nothing is uploaded; "test target" shows the key the server offers
	// for the admin to confirm and pin.
	HostKey string `json:"host_key,omitempty"`
	// CACert (PEM) is trusted for the S3 endpoint instead of the box's
	// trust store (a private CA).
	CACert string `json:"ca_cert,omitempty"`
}

// TargetSecrets are a target's credentials; empty fields keep the stored ones.
type TargetSecrets struct {
	Password   string // SFTP password or S3 secret access key
	PrivateKey string // SFTP only: an unencrypted OpenSSH or PEM private key
}

// TargetStatus is the outcome of the last upload to a target.
type TargetStatus struct {
	Time    time.Time `json:"time"`
	OK      bool      `json:"ok"`
	Message string    `json:"message"`
}

// TargetView is a target as the API shows it: never a credential.
type TargetView struct {
	Kind string `json:"kind"`
	TargetConfig
	PasswordSet   bool          `json:"password_set"`
	PrivateKeySet bool          `json:"private_key_set"`
	Status        *TargetStatus `json:"status,omitempty"`
}

// TestResult answers "test target" in words. HostKey is the key the SFTP
// server offered (authorized_keys format) when none is pinned yet, for the
// admin to confirm and pin.
type TestResult struct {
	OK          bool   `json:"ok"`
	Message     string `json:"message"`
	HostKey     string `json:"host_key,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

var (
	hostRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	userRE   = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)
	bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionRE = regexp.MustCompile(`^[a-z0-9-]{0,32}$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9._/-]{0,128}$`)
	pathRE   = regexp.MustCompile(`^[A-Za-z0-9._/ ~+-]{1,512}$`)
)

func badField(field, why string) error {
	return fmt.Errorf("%w: field %s: %s", ErrBadRequest, field, why)
}

func validKind(kind string) error {
	if kind != TargetSFTP && kind != TargetS3 {
		return badField("kind", "sftp or s3")
	}
	return nil
}

func cleanRel(field, p string) error {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return badField(field, `no ".." segments`)
		}
	}
	return nil
}

// ValidateTarget checks every field of a target of kind; refusals name the
// field. It is also the fuzzed entry point for the settings an admin sends.
func ValidateTarget(kind string, c TargetConfig, sec TargetSecrets) error {
	if err := validKind(kind); err != nil {
		return err
	}
	if net.ParseIP(c.Host) == nil && !hostRE.MatchString(c.Host) {
		return badField("host", "a host name or IP address, without scheme or port")
	}
	if c.Port < 0 || c.Port > 65535 {
		return badField("port", "1-65535 (0: the default)")
	}
	if !userRE.MatchString(c.User) {
		return badField("user", "1-128 printable characters without spaces")
	}
	if !prefixRE.MatchString(c.Prefix) || strings.HasPrefix(c.Prefix, "/") {
		return badField("prefix", "up to 128 of A-Z a-z 0-9 . _ / -, not starting with /")
	}
	if err := cleanRel("prefix", c.Prefix); err != nil {
		return err
	}
	if len(sec.Password) > maxSecret || !utf8.ValidString(sec.Password) {
		return badField("password", fmt.Sprintf("at most %d bytes of UTF-8", maxSecret))
	}
	switch kind {
	case TargetSFTP:
		if !pathRE.MatchString(c.Path) {
			return badField("path", "a directory: 1-512 of A-Z a-z 0-9 . _ / space ~ + -")
		}
		if err := cleanRel("path", c.Path); err != nil {
			return err
		}
		if c.Bucket != "" || c.Region != "" || c.CACert != "" {
			return badField("bucket", "bucket, region and ca_cert are for S3 targets")
		}
		if c.HostKey != "" {
			if _, err := parseHostKey(c.HostKey); err != nil {
				return err
			}
		}
		if sec.PrivateKey != "" {
			if len(sec.PrivateKey) > maxPrivateKey {
				return badField("private_key", "too long")
			}
			if _, err := ssh.ParsePrivateKey([]byte(sec.PrivateKey)); err != nil {
				return badField("private_key", "not an unencrypted OpenSSH or PEM private key")
			}
		}
	case TargetS3:
		if !bucketRE.MatchString(c.Bucket) || strings.Contains(c.Bucket, "..") {
			return badField("bucket", "an S3 bucket name: 3-63 of a-z 0-9 . -")
		}
		if !regionRE.MatchString(c.Region) {
			return badField("region", "up to 32 of a-z 0-9 -")
		}
		if c.Path != "" || c.HostKey != "" || sec.PrivateKey != "" {
			return badField("path", "path, host_key and private_key are for SFTP targets")
		}
		if c.CACert != "" {
			if _, err := parseCA(c.CACert); err != nil {
				return err
			}
		}
	}
	return nil
}

func parseHostKey(line string) (ssh.PublicKey, error) {
	if len(line) > maxHostKey {
		return nil, badField("host_key", "too long")
	}
	k, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, badField("host_key", `one public key in authorized_keys format ("ssh-ed25519 AAAA…")`)
	}
	return k, nil
}

func parseCA(p string) (*x509.CertPool, error) {
	if len(p) > maxCACert {
		return nil, badField("ca_cert", "too long")
	}
	pool := x509.NewCertPool()
	rest, n := []byte(p), 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if b.Type != "CERTIFICATE" || err != nil {
			return nil, badField("ca_cert", "PEM certificates only")
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, badField("ca_cert", "one or more PEM certificates")
	}
	return pool, nil
}

func targetKey(kind string) string   { return "target." + kind }
func passwordKey(kind string) string { return "target." + kind + ".password" }
func privKeyKey(kind string) string  { return "target." + kind + ".private_key" }
func statusKey(kind string) string   { return "target." + kind + ".status" }

type target struct {
	kind string
	cfg  TargetConfig
	sec  TargetSecrets
}

func loadTarget(tx *store.Tx, kind string) (target, bool, error) {
	t := target{kind: kind}
	ok, err := tx.Get(settingsBucket, targetKey(kind), &t.cfg)
	if err != nil || !ok {
		return t, ok, err
	}
	pw, _, err := tx.GetSecret(settingsBucket, passwordKey(kind))
	if err != nil {
		return t, false, fmt.Errorf("backup: %s target password: %w", kind, err)
	}
	pk, _, err := tx.GetSecret(settingsBucket, privKeyKey(kind))
	if err != nil {
		return t, false, fmt.Errorf("backup: %s target key: %w", kind, err)
	}
	t.sec = TargetSecrets{Password: string(pw), PrivateKey: string(pk)}
	return t, true, nil
}

// Targets lists the configured remote targets, without credentials.
func (s *Service) Targets() ([]TargetView, error) {
	var out []TargetView
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		for _, kind := range TargetKinds {
			t, ok, err := loadTarget(tx, kind)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			v := TargetView{Kind: kind, TargetConfig: t.cfg, PasswordSet: t.sec.Password != "", PrivateKeySet: t.sec.PrivateKey != ""}
			var st TargetStatus
			if ok, err := tx.Get(stateBucket, statusKey(kind), &st); err != nil {
				return err
			} else if ok {
				v.Status = &st
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// SetTarget validates and stores a target; empty credentials keep the
// stored ones. The caller has re-authenticated: a target receives every
// backup (encrypted), and its credentials are the admin's.
func (s *Service) SetTarget(kind string, c TargetConfig, sec TargetSecrets, who Actor) error {
	if err := ValidateTarget(kind, c, sec); err != nil {
		return err
	}
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		old, had, err := loadTarget(tx, kind)
		if err != nil {
			return err
		}
		if sec.Password == "" {
			sec.Password = old.sec.Password
		}
		if sec.PrivateKey == "" {
			sec.PrivateKey = old.sec.PrivateKey
		}
		if sec.Password == "" && sec.PrivateKey == "" {
			if kind == TargetS3 {
				return badField("password", "the secret access key is required")
			}
			return badField("password", "a password or a private key is required")
		}
		if err := tx.Put(settingsBucket, targetKey(kind), c); err != nil {
			return err
		}
		for k, v := range map[string]string{passwordKey(kind): sec.Password, privKeyKey(kind): sec.PrivateKey} {
			if v == "" {
				if err := tx.Delete(settingsBucket, k); err != nil {
					return err
				}
				continue
			}
			if err := tx.PutSecret(settingsBucket, k, []byte(v)); err != nil {
				return err
			}
		}
		var before any
		if had {
			before = old.cfg
		}
		return s.cfg.Audit.RecordTx(tx, audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.target.set",
			Target: kind, Before: before, After: c})
	})
}

// DeleteTarget forgets a target and its credentials (the files on it stay).
func (s *Service) DeleteTarget(kind string, who Actor) error {
	if err := validKind(kind); err != nil {
		return err
	}
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		_, had, err := loadTarget(tx, kind)
		if err != nil {
			return err
		}
		if !had {
			return fmt.Errorf("%w: no %s target", ErrNotFound, kind)
		}
		for _, k := range []string{targetKey(kind), passwordKey(kind), privKeyKey(kind)} {
			if err := tx.Delete(settingsBucket, k); err != nil {
				return err
			}
		}
		if err := tx.Delete(stateBucket, statusKey(kind)); err != nil {
			return err
		}
		return s.cfg.Audit.RecordTx(tx, audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.target.delete", Target: kind})
	})
}

func (s *Service) target(kind string) (target, error) {
	if err := validKind(kind); err != nil {
		return target{}, err
	}
	var t target
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		t, ok, err = loadTarget(tx, kind)
		if err == nil && !ok {
			err = fmt.Errorf("%w: no %s target", ErrNotFound, kind)
		}
		return err
	})
	return t, err
}

// remote is one connected target.
type remote interface {
	// put stores f (size bytes) under name so that it appears whole or not at all.
	put(ctx context.Context, name string, f *os.File, size int64) error
	list(ctx context.Context) ([]File, error)
	get(ctx context.Context, name string) (readCloser, error)
	remove(ctx context.Context, name string) error
	// sweep removes what this box's (serial's) interrupted uploads left;
	// another box's uploads in the same place stay. Only after list, under
	// the push lock.
	sweep(ctx context.Context, serial string) error
	// probe checks the directory or bucket can be listed and written.
	probe(ctx context.Context) error
	Close() error
}

type readCloser interface {
	Read(p []byte) (int, error)
	Close() error
}

func (s *Service) dial(ctx context.Context, t target) (remote, error) {
	maxList := s.cfg.Limits.MaxRemoteFiles
	if maxList <= 0 {
		maxList = DefaultLimits().MaxRemoteFiles
	}
	switch t.kind {
	case TargetSFTP:
		return dialSFTP(ctx, t, maxList)
	case TargetS3:
		return dialS3(ctx, t, maxList)
	}
	return nil, validKind(t.kind)
}

// remoteFiles keeps the names that are backups, newest first.
func remoteFiles(names []string, sizes []int64) []File {
	var out []File
	for i, n := range names {
		m := fileRE.FindStringSubmatch(n)
		if m == nil {
			continue
		}
		ts, err := time.Parse(fileTime, m[3])
		if err != nil {
			continue
		}
		out = append(out, File{Name: n, Kind: m[2], Created: ts, Size: sizes[i]})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].Name > out[j].Name
	})
	return out
}

// TestTarget connects to the stored target, authenticates and writes and
// removes a probe file, and says what happened in words.
func (s *Service) TestTarget(ctx context.Context, kind string) (TestResult, error) {
	t, err := s.target(kind)
	if err != nil {
		return TestResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*remoteTimeout)
	defer cancel()
	r, err := s.dial(ctx, t)
	if err != nil {
		var u *unpinnedError
		if errors.As(err, &u) {
			return TestResult{Message: u.Error(), HostKey: u.line, Fingerprint: u.fp}, nil
		}
		return TestResult{Message: explain(t, err)}, nil
	}
	defer r.Close()
	if err := r.probe(ctx); err != nil {
		return TestResult{Message: explain(t, err)}, nil
	}
	files, err := r.list(ctx)
	if err != nil {
		return TestResult{Message: explain(t, err)}, nil
	}
	return TestResult{OK: true, Message: fmt.Sprintf("Connected to %s, logged in and wrote a test file; %d backup file(s) there.",
		where(t), len(files))}, nil
}

func where(t target) string {
	port := t.cfg.Port
	if t.kind == TargetSFTP {
		if port == 0 {
			port = 22
		}
		return fmt.Sprintf("sftp://%s@%s/%s", t.cfg.User, net.JoinHostPort(t.cfg.Host, strconv.Itoa(port)), strings.TrimPrefix(t.cfg.Path, "/"))
	}
	if port == 0 {
		port = 443
	}
	return fmt.Sprintf("https://%s/%s/%s", net.JoinHostPort(t.cfg.Host, strconv.Itoa(port)), t.cfg.Bucket, t.cfg.Prefix)
}

// RemoteList lists the backups on a target, newest first; backups of
// other boxes are listed too (a restore on a new box starts there).
func (s *Service) RemoteList(ctx context.Context, kind string) ([]File, error) {
	t, err := s.target(kind)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*remoteTimeout)
	defer cancel()
	r, err := s.dial(ctx, t)
	if err != nil {
		return nil, &RemoteError{Kind: kind, Msg: explain(t, err), Err: err}
	}
	defer r.Close()
	files, err := r.list(ctx)
	if err != nil {
		return nil, &RemoteError{Kind: kind, Msg: explain(t, err), Err: err}
	}
	return files, nil
}

// RemoteFetch streams a backup from a target into an upload (bounded like
// any upload) and returns its id for RestoreUpload.
func (s *Service) RemoteFetch(ctx context.Context, kind, name string, who Actor) (string, error) {
	if !fileRE.MatchString(name) {
		return "", fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	t, err := s.target(kind)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	id, err := func() (string, error) {
		r, err := s.dial(ctx, t)
		if err != nil {
			return "", err
		}
		defer r.Close()
		rc, err := r.get(ctx, name)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		return s.SaveUpload(rc)
	}()
	outcome, detail := audit.OK, ""
	if err != nil {
		outcome, detail = audit.Failed, explain(t, err)
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBadRequest) {
			err = &RemoteError{Kind: kind, Msg: detail, Err: err}
		}
	}
	_ = s.cfg.Audit.Record(audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.fetch",
		Target: kind + ":" + name, Outcome: outcome, Detail: detail})
	return id, err
}

// errTooManyFiles: a listing went past Limits.MaxRemoteFiles.
func errTooManyFiles(max int) error {
	return fmt.Errorf("the target lists more than %d entries there; give this box a directory or prefix of its own", max)
}

// RemoteError is a target that could not be reached or refused; Msg says
// why in words.
type RemoteError struct {
	Kind string
	Msg  string
	Err  error
}

func (e *RemoteError) Error() string { return "backup: " + e.Kind + " target: " + e.Msg }
func (e *RemoteError) Unwrap() error { return e.Err }

// PushSoon copies the kept backups to the targets in the background (after
// an on-demand backup: the request does not wait for the upload).
func (s *Service) PushSoon(who Actor) {
	go func() { _ = s.Push(context.Background(), who) }()
}

// Push copies every backup kept on the box that a target lacks, then
// deletes on the target the oldest backups of this box beyond the
// retention counts. Each target's outcome is recorded (Targets shows it),
// audited and logged; a failed target is tried again at the next schedule.
func (s *Service) Push(ctx context.Context, who Actor) error {
	s.pushMu.Lock()
	defer s.pushMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	var errs []error
	for _, kind := range TargetKinds {
		t, err := s.target(kind)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !t.cfg.Enabled {
			continue
		}
		n, err := s.pushTo(ctx, t)
		st := TargetStatus{Time: s.cfg.Now().UTC(), OK: err == nil,
			Message: fmt.Sprintf("%d backup(s) uploaded to %s", n, where(t))}
		outcome := audit.OK
		if err != nil {
			st.Message = fmt.Sprintf("upload to %s failed after %d file(s): %s; tried again at the next schedule", where(t), n, explain(t, err))
			outcome = audit.Failed
			s.cfg.Log.Error("backup: upload to remote target", "target", kind, "err", err)
			errs = append(errs, &RemoteError{Kind: kind, Msg: st.Message, Err: err})
		}
		uerr := s.cfg.DB.Update(func(tx *store.Tx) error {
			return tx.Put(stateBucket, statusKey(kind), st)
		})
		if uerr != nil {
			errs = append(errs, uerr)
		}
		if err != nil || n > 0 {
			if aerr := s.cfg.Audit.Record(audit.Event{Actor: who.Name, Source: who.Source, Action: "backup.upload", Target: kind,
				Outcome: outcome, Detail: st.Message}); aerr != nil {
				errs = append(errs, aerr)
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Service) pushTo(ctx context.Context, t target) (int, error) {
	r, err := s.dial(ctx, t)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	have, err := r.list(ctx)
	if err != nil {
		return 0, err
	}
	if err := r.sweep(ctx, s.cfg.Box.Serial); err != nil {
		return 0, err
	}
	there := map[string]bool{}
	for _, f := range have {
		there[f.Name] = true
	}
	local, err := s.List()
	if err != nil {
		return 0, err
	}
	n := 0
	// Oldest first, so an interrupted push leaves the newest to the retry
	// and the prune below never removes what was just sent.
	for i := len(local) - 1; i >= 0; i-- {
		lf := local[i]
		if there[lf.Name] {
			continue
		}
		if err := s.putFile(ctx, r, lf); err != nil {
			return n, err
		}
		n++
		have = append(have, lf)
	}
	return n, s.pruneRemote(ctx, r, have)
}

func (s *Service) putFile(ctx context.Context, r remote, lf File) error {
	f, err := os.Open(filepath.Join(s.cfg.Dir, lf.Name))
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", lf.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backup: stat %s: %w", lf.Name, err)
	}
	if err := r.put(ctx, lf.Name, f, fi.Size()); err != nil {
		return fmt.Errorf("upload %s: %w", lf.Name, err)
	}
	return nil
}

// pruneRemote deletes this box's backups beyond each kind's retention
// count, oldest first. Other boxes' files and kinds whose schedule is off
// are left alone.
func (s *Service) pruneRemote(ctx context.Context, r remote, files []File) error {
	files = remoteFiles(names(files), sizes(files))
	count := map[string]int{}
	for _, f := range files {
		m := fileRE.FindStringSubmatch(f.Name)
		if m[1] != s.cfg.Box.Serial {
			continue
		}
		keep, err := s.keep(f.Kind)
		if err != nil {
			return err
		}
		if keep == 0 {
			continue
		}
		if count[f.Kind]++; count[f.Kind] > keep {
			if err := r.remove(ctx, f.Name); err != nil {
				return fmt.Errorf("delete old backup %s: %w", f.Name, err)
			}
		}
	}
	return nil
}

func names(fs []File) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Name
	}
	return out
}

func sizes(fs []File) []int64 {
	out := make([]int64, len(fs))
	for i, f := range fs {
		out[i] = f.Size
	}
	return out
}

// retryFailed pushes when a target's last upload failed or none was tried yet.
func (s *Service) retryFailed(ctx context.Context) error {
	views, err := s.Targets()
	if err != nil {
		return err
	}
	for _, v := range views {
		if v.Enabled && (v.Status == nil || !v.Status.OK) {
			return s.Push(ctx, Actor{Name: "schedule"})
		}
	}
	return nil
}
