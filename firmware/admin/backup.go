package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
)

// Backups is the backup service (*backup.Service).
type Backups interface {
	List() ([]backup.File, error)
	Create(kind string, e backup.Encryption, who backup.Actor) (backup.File, error)
	Open(name string) (*os.File, error)
	Delete(name string, who backup.Actor) error
	SaveUpload(r io.Reader) (string, error)
	RestoreUpload(id string, d backup.Decryption, who backup.Actor) (*backup.Manifest, error)
	RestoreFile(name string, d backup.Decryption, who backup.Actor) (*backup.Manifest, error)
	Settings() (backup.Settings, error)
	SetSettings(st backup.Settings, who backup.Actor) error
	GenerateKey(who backup.Actor) (identity, recipient string, err error)
	Targets() ([]backup.TargetView, error)
	SetTarget(kind string, c backup.TargetConfig, sec backup.TargetSecrets, who backup.Actor) error
	DeleteTarget(kind string, who backup.Actor) error
	TestTarget(ctx context.Context, kind string) (backup.TestResult, error)
	RemoteList(ctx context.Context, kind string) ([]backup.File, error)
	RemoteFetch(ctx context.Context, kind, name string, who backup.Actor) (string, error)
	PushSoon(who backup.Actor)
	Push(ctx context.Context, who backup.Actor) error
}

// BackupCreateRequest makes a backup now. Without a passphrase or
// recipient it is encrypted to the box's backup key and needs no
// re-authentication (only that key's holder can read it); a passphrase or
// another recipient makes it readable by the caller, so it needs the
// current password (and second factor).
type BackupCreateRequest struct {
	Passphrase string `json:"passphrase,omitempty"`
	Recipient  string `json:"recipient,omitempty"`
	// Media includes the recordings and voicemail audio (default off).
	Media bool `json:"media,omitempty"`
	auth.Proof
}

// BackupRestoreRequest restores an upload (from POST /api/v1/backups/upload)
// or a backup kept on the box, opened with the backup key (identity) or the
// passphrase.
type BackupRestoreRequest struct {
	Upload     string `json:"upload,omitempty"`
	Name       string `json:"name,omitempty"`
	Identity   string `json:"identity,omitempty"`
	Passphrase string `json:"passphrase,omitempty"`
	auth.Proof
}

// BackupSettingsRequest changes the schedule; the recipient changes only
// through key generation or explicitly here.
type BackupSettingsRequest struct {
	Recipient string `json:"recipient,omitempty"`
	Daily     int    `json:"daily"`
	Weekly    int    `json:"weekly"`
	Monthly   int    `json:"monthly"`
	// Media includes the recordings in scheduled backups.
	Media bool `json:"media"`
	auth.Proof
}

// BackupTargetRequest sets a remote target. Password is the SFTP password
// or the S3 secret key; it and private_key are write-only (empty: keep).
type BackupTargetRequest struct {
	backup.TargetConfig
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
	auth.Proof
}

// BackupFetchRequest names a backup on a remote target.
type BackupFetchRequest struct {
	Name string `json:"name"`
}

var errBackupRefused = errors.New("backup refused")

func (s *Server) backupRoutes() []route {
	return []route{
		{method: "GET", path: "/api/v1/backups", summary: "List the backups kept on the box, newest first", perm: auth.PermSystemWrite, h: s.apiBackupList},
		{method: "POST", path: "/api/v1/backups", summary: "Make a backup now (to the box's backup key; a passphrase or other recipient needs current_password)", req: BackupCreateRequest{}, perm: auth.PermSystemWrite, h: s.apiBackupCreate},
		{method: "GET", path: "/api/v1/backups/settings", summary: "Backup schedule, retention counts and recipient", perm: auth.PermSystemWrite, h: s.apiBackupSettings},
		{method: "PUT", path: "/api/v1/backups/settings", summary: "Change the backup schedule and retention (needs current_password)", req: BackupSettingsRequest{}, perm: auth.PermSystemWrite, h: s.apiBackupSetSettings},
		{method: "POST", path: "/api/v1/backups/key", summary: "Generate a new backup key: the secret identity is returned once and never stored; keep it off the box (needs current_password)", req: auth.Proof{}, perm: auth.PermSystemWrite, h: s.apiBackupKey},
		{method: "POST", path: "/api/v1/backups/upload", summary: "Upload a backup file (raw body, streamed to disk, bounded) for a restore; answers its upload id", perm: auth.PermSystemWrite, h: s.apiBackupUpload},
		{method: "POST", path: "/api/v1/backups/restore", summary: "Restore an uploaded or kept backup after validating all of it (needs current_password); services restart afterwards", req: BackupRestoreRequest{}, perm: auth.PermSystemWrite, h: s.apiBackupRestore},
		{method: "GET", path: "/api/v1/backups/targets", summary: "Remote backup targets (SFTP, S3) with the last upload's outcome; credentials are never returned, only whether they are set", perm: auth.PermSystemWrite, h: s.apiBackupTargets},
		{method: "PUT", path: "/api/v1/backups/targets/{kind}", summary: "Set the SFTP or S3 target (kind sftp or s3); empty password/private_key keep the stored ones (needs current_password)", req: BackupTargetRequest{}, perm: auth.PermSystemWrite, h: s.apiBackupSetTarget},
		{method: "DELETE", path: "/api/v1/backups/targets/{kind}", summary: "Forget a remote target and its credentials; its files stay (needs current_password)", req: auth.Proof{}, perm: auth.PermSystemWrite, h: s.apiBackupDeleteTarget},
		{method: "POST", path: "/api/v1/backups/targets/{kind}/test", summary: "Connect, log in and write a test file; answers in words (and the SFTP host key offered when none is pinned yet)", perm: auth.PermSystemWrite, h: s.apiBackupTestTarget},
		{method: "POST", path: "/api/v1/backups/targets/push", summary: "Upload now every kept backup a target lacks and apply the remote retention; answers the targets with each outcome (502 when one failed)", perm: auth.PermSystemWrite, h: s.apiBackupPush},
		{method: "GET", path: "/api/v1/backups/targets/{kind}/files", summary: "List the backups on a remote target, newest first", perm: auth.PermSystemWrite, h: s.apiBackupRemoteFiles},
		{method: "POST", path: "/api/v1/backups/targets/{kind}/fetch", summary: "Copy a backup from a remote target into an upload for POST /api/v1/backups/restore", req: BackupFetchRequest{}, perm: auth.PermSystemWrite, h: s.apiBackupFetch},
		{method: "GET", path: "/api/v1/backups/{name}", summary: "Download a backup file (streamed)", perm: auth.PermSystemWrite, h: s.apiBackupDownload},
		{method: "DELETE", path: "/api/v1/backups/{name}", summary: "Delete a backup file", perm: auth.PermSystemWrite, h: s.apiBackupDelete},
	}
}

func actorOf(r *http.Request, p auth.Principal) backup.Actor {
	return backup.Actor{Name: p.Actor(), Source: src(r)}
}

// backupErr maps the backup package's refusals to answers.
func backupErr(err error) error {
	switch {
	case errors.Is(err, backup.ErrNotFound):
		return fmt.Errorf("%w: %v", errNotFound, err)
	case errors.Is(err, backup.ErrNoKey):
		return fmt.Errorf("%w: %v", errConflict, err)
	case errors.As(err, new(*backup.RemoteError)):
		return fmt.Errorf("%w: %v", errBackupRemote, err)
	case errors.Is(err, backup.ErrBadRequest), errors.Is(err, backup.ErrFormat), errors.Is(err, backup.ErrCorrupt),
		errors.Is(err, backup.ErrTooLarge), errors.Is(err, backup.ErrSchema), errors.Is(err, backup.ErrWrongKey),
		errors.Is(err, backup.ErrBoxLocal):
		return fmt.Errorf("%w: %v", errBackupRefused, err)
	}
	return err
}

func (s *Server) needBackups() error {
	if s.backups == nil {
		return fmt.Errorf("%w: backups are not set up on this box", errUnavailable)
	}
	return nil
}

func (s *Server) apiBackupList(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	l, err := s.backups.List()
	if err != nil {
		return err
	}
	if l == nil {
		l = []backup.File{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"backups": l})
	return nil
}

func (s *Server) apiBackupCreate(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	var req BackupCreateRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Passphrase != "" || req.Recipient != "" {
		if err := s.auth.Reauth(r.Context(), p, clientOf(r), req.Proof, "backup.create"); err != nil {
			return err
		}
	}
	f, err := s.backups.Create(backup.Manual, backup.Encryption{Passphrase: req.Passphrase, Recipient: req.Recipient, Media: req.Media}, actorOf(r, p))
	if err != nil {
		return backupErr(err)
	}
	// Copies to the remote targets run in the background; their outcome
	// shows in GET /api/v1/backups/targets and the audit log.
	s.backups.PushSoon(actorOf(r, p))
	writeJSON(w, http.StatusCreated, f)
	return nil
}

func (s *Server) apiBackupSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	st, err := s.backups.Settings()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) apiBackupSetSettings(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	var req BackupSettingsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), req.Proof, "backup.settings"); err != nil {
		return err
	}
	st, err := s.backups.Settings()
	if err != nil {
		return err
	}
	if req.Recipient != "" {
		st.Recipient = req.Recipient
	}
	st.Daily, st.Weekly, st.Monthly, st.Media = req.Daily, req.Weekly, req.Monthly, req.Media
	if err := s.backups.SetSettings(st, actorOf(r, p)); err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) apiBackupKey(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	var pr auth.Proof
	if err := decodeJSON(r, &pr); err != nil {
		return err
	}
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), pr, "backup.key.generate"); err != nil {
		return err
	}
	id, rcpt, err := s.backups.GenerateKey(actorOf(r, p))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"identity": id, "recipient": rcpt,
		"note": "This key is shown once and is not stored on the box. Keep it off the box: without it no backup made from now on can be restored."})
	return nil
}

func (s *Server) apiBackupUpload(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	id, err := s.backups.SaveUpload(r.Body)
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusCreated, map[string]string{"upload": id})
	return nil
}

func (s *Server) apiBackupRestore(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	var req BackupRestoreRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if (req.Upload == "") == (req.Name == "") {
		return fmt.Errorf("%w: give exactly one of the fields upload and name", errBadRequest)
	}
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), req.Proof, "backup.restore"); err != nil {
		return err
	}
	d := backup.Decryption{Identity: req.Identity, Passphrase: req.Passphrase}
	var m *backup.Manifest
	var err error
	if req.Upload != "" {
		m, err = s.backups.RestoreUpload(req.Upload, d, actorOf(r, p))
	} else {
		m, err = s.backups.RestoreFile(req.Name, d, actorOf(r, p))
	}
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "restored; services restart now", "manifest": m})
	return nil
}

func (s *Server) apiBackupDownload(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	f, err := s.backups.Open(r.PathValue("name"))
	if err != nil {
		return backupErr(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+r.PathValue("name")+`"`)
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
	return nil
}

func (s *Server) apiBackupDelete(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	if err := s.backups.Delete(r.PathValue("name"), actorOf(r, p)); err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

// errBackupRemote: a remote target could not be reached or refused (502).
var errBackupRemote = errors.New("backup target failed")

func (s *Server) apiBackupTargets(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	v, err := s.backups.Targets()
	if err != nil {
		return err
	}
	if v == nil {
		v = []backup.TargetView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"targets": v})
	return nil
}

func (s *Server) apiBackupSetTarget(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	var req BackupTargetRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	// A target receives every backup and holds the admin's credentials:
	// changing it needs the current password, like the schedule.
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), req.Proof, "backup.target.set"); err != nil {
		return err
	}
	kind := r.PathValue("kind")
	if err := s.backups.SetTarget(kind, req.TargetConfig, backup.TargetSecrets{Password: req.Password, PrivateKey: req.PrivateKey}, actorOf(r, p)); err != nil {
		return backupErr(err)
	}
	return s.apiBackupTargets(w, r, p)
}

func (s *Server) apiBackupDeleteTarget(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	var pr auth.Proof
	if err := decodeJSON(r, &pr); err != nil {
		return err
	}
	if err := s.auth.Reauth(r.Context(), p, clientOf(r), pr, "backup.target.delete"); err != nil {
		return err
	}
	if err := s.backups.DeleteTarget(r.PathValue("kind"), actorOf(r, p)); err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted"})
	return nil
}

func (s *Server) apiBackupTestTarget(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	res, err := s.backups.TestTarget(r.Context(), r.PathValue("kind"))
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) apiBackupRemoteFiles(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	l, err := s.backups.RemoteList(r.Context(), r.PathValue("kind"))
	if err != nil {
		return backupErr(err)
	}
	if l == nil {
		l = []backup.File{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"files": l})
	return nil
}

func (s *Server) apiBackupFetch(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	var req BackupFetchRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	id, err := s.backups.RemoteFetch(r.Context(), r.PathValue("kind"), req.Name, actorOf(r, p))
	if err != nil {
		return backupErr(err)
	}
	writeJSON(w, http.StatusCreated, map[string]string{"upload": id})
	return nil
}

// longTransfer is how long a backup transfer (upload, download, restore,
// copy to or from a target) may take: the HTTPS server's 30 s timeouts are
// for ordinary requests, and a backup of a large box is hundreds of MB.
const longTransfer = 2 * time.Hour

// allowLongTransfer lifts the server's read and write deadlines for this
// request to longTransfer (only after authentication and authorisation: an
// anonymous client never gets more than the ordinary timeouts).
func allowLongTransfer(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	end := time.Now().Add(longTransfer)
	_ = rc.SetReadDeadline(end)
	_ = rc.SetWriteDeadline(end)
}

func (s *Server) apiBackupPush(w http.ResponseWriter, r *http.Request, p auth.Principal) error {
	if err := s.needBackups(); err != nil {
		return err
	}
	allowLongTransfer(w)
	if err := s.backups.Push(r.Context(), actorOf(r, p)); err != nil {
		return backupErr(err)
	}
	return s.apiBackupTargets(w, r, p)
}
