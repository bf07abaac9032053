package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// unpinnedError: the server answered but no host key is pinned yet; the
// offered key is shown to the admin to confirm (trust on first use, never
// silently).
type unpinnedError struct {
	line, fp string
}

func (e *unpinnedError) Error() string {
	return "The server offered the host key " + e.fp + ". No key is pinned yet, so nothing was sent: check this fingerprint " +
		"against the server (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and pin it, or paste the server's public key."
}

// hostKeyError: the server's key is not the pinned one.
type hostKeyError struct {
	got, want string
}

func (e *hostKeyError) Error() string {
	return "host key mismatch: the server offered " + e.got + " but " + e.want + " is pinned. If the server's key really " +
		"changed, pin the new one; otherwise someone may be intercepting the connection. Nothing was sent."
}

type sftpRemote struct {
	conn *ssh.Client
	c    *sftp.Client
	dir  string
	stop func() bool
	tmps []string // temporary names seen by the last list
	// maxList bounds the entries a listing may have (pkg/sftp reads the
	// whole directory first: the bound applies after, and the listing
	// itself is bounded in time by the caller's context).
	maxList int
}

func dialSFTP(ctx context.Context, t target, maxList int) (remote, error) {
	port := t.cfg.Port
	if port == 0 {
		port = 22
	}
	addr := net.JoinHostPort(t.cfg.Host, strconv.Itoa(port))
	cc := &ssh.ClientConfig{User: t.cfg.User, Timeout: remoteTimeout}
	var pinned ssh.PublicKey
	if t.cfg.HostKey != "" {
		k, err := parseHostKey(t.cfg.HostKey)
		if err != nil {
			return nil, err
		}
		pinned = k
		// Ask for the pinned key's algorithm, so a server with several
		// keys shows the one the admin confirmed.
		cc.HostKeyAlgorithms = hostKeyAlgorithms(k.Type())
	}
	cc.HostKeyCallback = func(_ string, _ net.Addr, key ssh.PublicKey) error {
		if pinned == nil {
			return &unpinnedError{line: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key))), fp: ssh.FingerprintSHA256(key)}
		}
		if !bytes.Equal(key.Marshal(), pinned.Marshal()) {
			return &hostKeyError{got: ssh.FingerprintSHA256(key), want: ssh.FingerprintSHA256(pinned)}
		}
		return nil
	}
	if t.sec.PrivateKey != "" {
		signer, err := ssh.ParsePrivateKey([]byte(t.sec.PrivateKey))
		if err != nil {
			return nil, badField("private_key", "not an unencrypted OpenSSH or PEM private key")
		}
		cc.Auth = append(cc.Auth, ssh.PublicKeys(signer))
	}
	if t.sec.Password != "" {
		cc.Auth = append(cc.Auth, ssh.Password(t.sec.Password))
	}
	d := net.Dialer{Timeout: remoteTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// The handshake honours ctx through the deadline.
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(timeZero)
	conn := ssh.NewClient(sc, chans, reqs)
	c, err := sftp.NewClient(conn, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(16))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start sftp: %w", err)
	}
	r := &sftpRemote{conn: conn, c: c, dir: t.cfg.Path, maxList: maxList}
	// Stop the session when ctx ends (a hung server or a shutdown).
	r.stop = context.AfterFunc(ctx, func() { conn.Close() })
	return r, nil
}

func hostKeyAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

func (r *sftpRemote) Close() error {
	r.stop()
	r.c.Close()
	return r.conn.Close()
}

func (r *sftpRemote) p(name string) string { return path.Join(r.dir, name) }

func randHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// put writes to a temporary name and renames it, so a broken upload never
// looks like a backup. The file streams from disk through the SFTP
// window (several writes in flight): never whole in memory.
func (r *sftpRemote) put(ctx context.Context, name string, f *os.File, size int64) error {
	tmp := r.p(tmpPrefix + name + "." + randHex())
	w, err := r.c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	n, err := w.ReadFrom(io.LimitReader(f, size))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("wrote %d of %d bytes", n, size)
	}
	if err == nil {
		err = r.c.PosixRename(tmp, r.p(name))
	}
	if err != nil {
		_ = r.c.Remove(tmp)
		return err
	}
	return nil
}

func (r *sftpRemote) list(ctx context.Context) ([]File, error) {
	ents, err := r.c.ReadDirContext(ctx, r.dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", r.dir, err)
	}
	if len(ents) > r.maxList {
		return nil, errTooManyFiles(r.maxList)
	}
	var ns []string
	var ss []int64
	r.tmps = r.tmps[:0]
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			// An upload in progress or interrupted, this box's or another's
			// sharing the directory: only sweep removes it.
			r.tmps = append(r.tmps, e.Name())
			continue
		}
		if e.Mode().IsRegular() {
			ns = append(ns, e.Name())
			ss = append(ss, e.Size())
		}
	}
	return remoteFiles(ns, ss), nil
}

// sweep removes the temporary files of this box's interrupted uploads
// (named after the backup, so after the box's serial) seen by the last
// list. The caller holds the push lock, so none of them is in progress;
// another box's (another serial) stays.
func (r *sftpRemote) sweep(ctx context.Context, serial string) error {
	for _, n := range r.tmps {
		// tmpPrefix + backup name + "." + 16 hex digits (put).
		base := strings.TrimPrefix(n, tmpPrefix)
		if i := strings.LastIndexByte(base, '.'); i >= 0 && len(base)-i == 17 {
			base = base[:i]
		}
		if m := fileRE.FindStringSubmatch(base); m != nil && m[1] == serial {
			if err := r.c.Remove(r.p(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", n, err)
			}
		}
	}
	return nil
}

func (r *sftpRemote) get(ctx context.Context, name string) (readCloser, error) {
	f, err := r.c.Open(r.p(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return f, err
}

func (r *sftpRemote) remove(ctx context.Context, name string) error {
	return r.c.Remove(r.p(name))
}

func (r *sftpRemote) probe(ctx context.Context) error {
	tmp := r.p(tmpPrefix + "probe-" + randHex())
	w, err := r.c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("write a test file in %s: %w", r.dir, err)
	}
	_, err = w.Write([]byte("edgepbx target test\n"))
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if rerr := r.c.Remove(tmp); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("write a test file in %s: %w", r.dir, err)
	}
	return nil
}
