package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// An InstallUpdate request switches its connection to a byte stream: the
// request frame carries the bundle's size, then exactly that many raw
// bundle bytes follow, then PID 1 sends one Reply and closes the
// connection. PID 1 reads the stream once and verifies it itself (init/
// update): edgepbxd only forwards bytes, and cannot change what PID 1
// checked after the check, since the bytes checked are the bytes written.
// A refusal may come before the stream ends (bad signature, key, floor):
// PID 1 then replies at once and closes; the client stops sending.

// MaxUpdateSize bounds a bundle on the wire; PID 1 bounds the image by its
// slot size too.
const MaxUpdateSize = 1 << 30

// updateReadTimeout is how long PID 1 waits for the next bundle bytes.
const updateReadTimeout = 30 * time.Second

// InstallUpdateRequest announces a bundle of Size bytes.
type InstallUpdateRequest struct {
	Size int64 `json:"size"`
}

// UpdateResult is the data of a successful InstallUpdate reply.
type UpdateResult struct {
	Slot          string `json:"slot"`
	Version       string `json:"version"`
	VersionNumber uint64 `json:"version_number"`
	Downgrade     bool   `json:"downgrade,omitempty"`
	BytesWritten  int64  `json:"bytes_written"`
	BytesRead     int64  `json:"bytes_read"`
}

// UpdateStatus is the data of an UpdateStatus reply: the install under
// way, if any, and this boot's trial.
type UpdateStatus struct {
	Installing bool   `json:"installing"`
	Written    int64  `json:"written"`
	Total      int64  `json:"total"`
	Board      string `json:"board"`
	Version    string `json:"version"`
	// VersionNumber is the running image's (anti-rollback) number.
	VersionNumber uint64 `json:"version_number"`
	Floor         uint64 `json:"floor"`
	// Trial is set during a trial boot; LastRollback says why the box
	// last went back to the old slot.
	Trial        *TrialStatus `json:"trial,omitempty"`
	LastRollback string       `json:"last_rollback,omitempty"`
	// RolledBackAtBoot: this boot is the old slot coming back from a
	// failed trial (LastRollback says why); edgepbxd audits it once.
	RolledBackAtBoot bool `json:"rolled_back_at_boot,omitempty"`
}

// TrialStatus is a trial boot as the dashboard shows it.
type TrialStatus struct {
	Slot         string        `json:"slot"`
	Version      string        `json:"version"`
	HealthyFor   time.Duration `json:"healthy_for"`
	HealthySince time.Time     `json:"healthy_since,omitzero"`
	Remaining    time.Duration `json:"remaining"`
	Committed    bool          `json:"committed"`
	RolledBack   string        `json:"rolled_back,omitempty"`
}

// Updater is PID 1's update installer (init/update).
type Updater interface {
	Install(ctx context.Context, r io.Reader) (UpdateResult, error)
	Status() UpdateStatus
}

func (r InstallUpdateRequest) validate() error {
	if r.Size <= int64(bundle.HeaderLen+bundle.SignatureSize) || r.Size > MaxUpdateSize {
		return fieldErr("size", "must be %d..%d bytes", bundle.HeaderLen+bundle.SignatureSize+1, MaxUpdateSize)
	}
	return nil
}

var errNoUpdater = errors.New("control: updates not available")

// deadlineReader renews the read deadline before every read: a stalled
// upload ends after updateReadTimeout, a slow one does not.
type deadlineReader struct{ c net.Conn }

func (d deadlineReader) Read(p []byte) (int, error) {
	d.c.SetReadDeadline(time.Now().Add(updateReadTimeout))
	return d.c.Read(p)
}

// serveInstall handles an InstallUpdate request; the connection is closed
// after its reply.
func (s *Server) serveInstall(ctx context.Context, c net.Conn, payload []byte) Reply {
	var req InstallUpdateRequest
	if err := decodeStrict(payload, &req); err != nil {
		return fail(err)
	}
	if err := req.validate(); err != nil {
		return fail(err)
	}
	if s.cfg.Updater == nil {
		return fail(errNoUpdater)
	}
	res, err := s.cfg.Updater.Install(ctx, io.LimitReader(deadlineReader{c}, req.Size))
	if err != nil {
		return fail(err)
	}
	return ok(res)
}

// InstallUpdate streams a bundle of size bytes from r to PID 1 on a
// connection of its own and returns PID 1's verdict. A refusal is a
// *RemoteError whose Reason says what is wrong (bundle.Reason).
func InstallUpdate(ctx context.Context, path string, r io.Reader, size int64) (UpdateResult, error) {
	var res UpdateResult
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
	if err != nil {
		return res, fmt.Errorf("control: dial %s: %w", path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	p, _ := json.Marshal(InstallUpdateRequest{Size: size})
	if err := WriteFrame(conn, TypeInstallUpdate, p); err != nil {
		return res, fmt.Errorf("control: InstallUpdate: %w", err)
	}
	// Send while PID 1 reads; PID 1 may answer (a refusal) before the end.
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, io.LimitReader(r, size))
		// Half-close, also when r failed: PID 1 sees a short stream at
		// once (and leaves the slot invalid) instead of waiting for bytes.
		if uc, ok := conn.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
		sent <- err
	}()
	f, rerr := ReadFrame(conn)
	if rerr != nil {
		serr := <-sent
		return res, fmt.Errorf("control: InstallUpdate reply: %w", errors.Join(rerr, serr))
	}
	conn.SetDeadline(time.Unix(1, 0)) // stop the sender if PID 1 answered early
	<-sent
	if f.Type != TypeReply {
		return res, fmt.Errorf("control: InstallUpdate: unexpected frame %v", f.Type)
	}
	var rep Reply
	if err := strictjson.Unmarshal(f.Payload, &rep); err != nil {
		return res, fmt.Errorf("control: InstallUpdate: bad reply: %w", err)
	}
	if !rep.OK {
		return res, &RemoteError{Type: TypeInstallUpdate, Field: rep.Field, Reason: rep.Reason, Message: rep.Error}
	}
	if err := strictjson.Unmarshal(rep.Data, &res); err != nil {
		return res, fmt.Errorf("control: InstallUpdate: decode reply: %w", err)
	}
	return res, nil
}

// UpdateStatus returns the install under way and this boot's trial.
func (c *Client) UpdateStatus(ctx context.Context) (UpdateStatus, error) {
	var st UpdateStatus
	err := c.Do(ctx, TypeUpdateStatus, nil, &st)
	return st, err
}

// InstallUpdate streams a bundle to PID 1 over a connection of its own
// (see the function InstallUpdate).
func (c *Client) InstallUpdate(ctx context.Context, r io.Reader, size int64) (UpdateResult, error) {
	return InstallUpdate(ctx, c.path, r, size)
}
