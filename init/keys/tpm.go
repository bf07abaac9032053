package keys

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// Opener opens a connection to the TPM.
type Opener func() (transport.TPMCloser, error)

// DeviceTPM opens the TPM at path: the kernel's resource manager
// (/dev/tpmrm0) on a box, or a swtpm unix socket in tests.
func DeviceTPM(path string) Opener {
	return func() (transport.TPMCloser, error) {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("keys: tpm %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSocket != 0 {
			// swtpm serves one connection at a time with a short backlog:
			// a dial right after the last close can be refused; retry.
			for i := 0; ; i++ {
				c, err := net.Dial("unix", path)
				if err == nil {
					return &sockTPM{c: c}, nil
				}
				if i == 50 || !(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EAGAIN)) {
					return nil, fmt.Errorf("keys: tpm %s: %w", path, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		return linuxtpm.Open(path)
	}
}

// sockTPM speaks the TPM command protocol over one socket connection
// (swtpm's unixio server), a whole response per command. go-tpm's own
// socket transport dials per command, which swtpm refuses under load.
type sockTPM struct{ c net.Conn }

// maxResponse bounds a TPM response (TPM2's largest is under 4 KiB).
const maxResponse = 8192

func (s *sockTPM) Send(cmd []byte) ([]byte, error) {
	s.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10) // tag u16, size u32, code u32
	if _, err := io.ReadFull(s.c, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n < 10 || n > maxResponse {
		return nil, fmt.Errorf("keys: tpm: response of %d bytes", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	if _, err := io.ReadFull(s.c, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

func (s *sockTPM) Close() error { return s.c.Close() }

// SealedHandle is the persistent handle (owner range) holding the sealed
// device key. The key is persisted in the TPM rather than as a loadable
// blob on /data so that erasing it (EvictControl) also kills every earlier
// copy of /data: a blob kept on disk would load again from a backup image.
const SealedHandle tpm2.TPMHandle = 0x81500E01

const tpmMagic = "EPXTPM1"

// tpmRecord is TPMFile: which handle, and the sealed object's name (a hash
// of its public area, unique per object), so another box's object at the
// same handle is told apart from ours.
type tpmRecord struct {
	handle tpm2.TPMHandle
	name   []byte
}

func (r tpmRecord) marshal() []byte {
	b := []byte(tpmMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(r.handle))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.name)))
	return append(b, r.name...)
}

func readTPMRecord(dir string) (tpmRecord, error) {
	p := filepath.Join(dir, TPMFile)
	b, err := readBounded(p, 256)
	if err != nil {
		return tpmRecord{}, err
	}
	n := len(tpmMagic)
	if len(b) < n+6 || string(b[:n]) != tpmMagic {
		return tpmRecord{}, fmt.Errorf("%w: %s", ErrCorrupt, p)
	}
	r := tpmRecord{handle: tpm2.TPMHandle(binary.BigEndian.Uint32(b[n:]))}
	l := int(binary.BigEndian.Uint16(b[n+4:]))
	if len(b) != n+6+l || l == 0 || r.handle>>24 != 0x81 {
		return tpmRecord{}, fmt.Errorf("%w: %s", ErrCorrupt, p)
	}
	r.name = b[n+6:]
	return r, nil
}

// srk creates the storage root key from the TCG's standard ECC template.
// The same template under the same owner seed gives the same key on every
// boot, so nothing about it is stored.
func srk(t transport.TPM) (*tpm2.CreatePrimaryResponse, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHOwner,
		InPublic:      tpm2.New2B(tpm2.ECCSRKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("keys: tpm: create storage root key: %w", err)
	}
	return rsp, nil
}

func flush(t transport.TPM, h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// tpmSeal seals dev in a keyed-hash data object under the SRK, persists it
// at SealedHandle (replacing what a previous install left there) and
// records its name in TPMFile. FixedTPM and FixedParent: the object can
// never be duplicated to another TPM. No PCR policy (see docs/architecture.md,
// "Keys"): without measured boot, PCRs would only change with firmware
// updates and lock a box out of its data after one.
//
// replace says whether a device key already in the TPM may be evicted: only
// for a key made this boot on a disk with no key material at all (a new or
// wiped disk in a used box: nobody knows the new key). A key that came from
// the disk (a plain or legacy file) must not replace a different one: that
// file may have been planted by someone with the disk, who would then know
// every secret sealed from now on.
func tpmSeal(dir string, open Opener, dev []byte, replace bool) error {
	t, err := open()
	if err != nil {
		return fmt.Errorf("keys: tpm: %w", err)
	}
	defer t.Close()
	parent, err := srk(t)
	if err != nil {
		return err
	}
	defer flush(t, parent.ObjectHandle)
	pub, err := parent.OutPublic.Contents()
	if err != nil {
		return fmt.Errorf("keys: tpm: %w", err)
	}
	if !replace {
		if rp, err := (tpm2.ReadPublic{ObjectHandle: SealedHandle}).Execute(t); err == nil {
			// Occupied. The same key is ours from a boot that lost power
			// before it wrote TPMFile: sealing again is harmless.
			cur, err := unsealObject(t, SealedHandle, rp.Name, parent, pub)
			if err != nil || subtle.ConstantTimeCompare(cur, dev) != 1 {
				return ErrTPMInUse
			}
		}
	}
	created, err := tpm2.Create{
		ParentHandle: tpm2.AuthHandle{
			Handle: parent.ObjectHandle, Name: parent.Name,
			// The key goes to the TPM encrypted (salted session): a bus
			// sniffer on a discrete TPM does not see it.
			Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptIn), tpm2.Salted(parent.ObjectHandle, *pub)),
		},
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			Data: tpm2.NewTPMUSensitiveCreate(&tpm2.TPM2BSensitiveData{Buffer: dev}),
		}},
		InPublic: tpm2.New2B(tpm2.TPMTPublic{
			Type:    tpm2.TPMAlgKeyedHash,
			NameAlg: tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{
				FixedTPM: true, FixedParent: true, UserWithAuth: true, NoDA: true,
			},
		}),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("keys: tpm: seal: %w", err)
	}
	loaded, err := tpm2.Load{
		ParentHandle: tpm2.AuthHandle{Handle: parent.ObjectHandle, Name: parent.Name, Auth: tpm2.PasswordAuth(nil)},
		InPrivate:    created.OutPrivate,
		InPublic:     created.OutPublic,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("keys: tpm: load sealed object: %w", err)
	}
	defer flush(t, loaded.ObjectHandle)
	if err := evict(t, SealedHandle); err != nil {
		return err
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
		PersistentHandle: SealedHandle,
	}).Execute(t); err != nil {
		return fmt.Errorf("keys: tpm: persist sealed object at %#x: %w", uint32(SealedHandle), err)
	}
	return writeAtomic(dir, TPMFile, tpmRecord{handle: SealedHandle, name: loaded.Name.Buffer}.marshal())
}

// evict removes the persistent object at h, if any.
func evict(t transport.TPM, h tpm2.TPMHandle) error {
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(t)
	if err != nil {
		return nil // nothing there
	}
	if _, err := (tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     &tpm2.NamedHandle{Handle: h, Name: rp.Name},
		PersistentHandle: h,
	}).Execute(t); err != nil {
		return fmt.Errorf("keys: tpm: evict %#x: %w", uint32(h), err)
	}
	return nil
}

func tpmUnseal(dir string, open Opener) ([]byte, error) {
	rec, err := readTPMRecord(dir)
	if err != nil {
		return nil, err
	}
	t, err := open()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoTPM, err)
	}
	defer t.Close()
	rp, err := tpm2.ReadPublic{ObjectHandle: rec.handle}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("%w: no sealed object at %#x (%v)", ErrWrongTPM, uint32(rec.handle), err)
	}
	if !bytes.Equal(rp.Name.Buffer, rec.name) {
		return nil, fmt.Errorf("%w: the object at %#x is not the one this disk was sealed with", ErrWrongTPM, uint32(rec.handle))
	}
	parent, err := srk(t)
	if err != nil {
		return nil, err
	}
	defer flush(t, parent.ObjectHandle)
	pub, err := parent.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("keys: tpm: %w", err)
	}
	return unsealObject(t, rec.handle, rp.Name, parent, pub)
}

func unsealObject(t transport.TPM, h tpm2.TPMHandle, name tpm2.TPM2BName, parent *tpm2.CreatePrimaryResponse, pub *tpm2.TPMTPublic) ([]byte, error) {
	rsp, err := tpm2.Unseal{ItemHandle: tpm2.AuthHandle{
		Handle: h, Name: name,
		// Salted, response-encrypted session: the key crosses the bus encrypted.
		Auth: tpm2.HMAC(tpm2.TPMAlgSHA256, 16, tpm2.AESEncryption(128, tpm2.EncryptOut), tpm2.Salted(parent.ObjectHandle, *pub)),
	}}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("keys: tpm: unseal: %w", err)
	}
	if len(rsp.OutData.Buffer) != keyLen {
		return nil, fmt.Errorf("%w: sealed object holds %d bytes", ErrCorrupt, len(rsp.OutData.Buffer))
	}
	return rsp.OutData.Buffer, nil
}

// tpmEvict destroys the sealed device key: the object named in TPMFile, or
// whatever sits at SealedHandle.
func tpmEvict(dir string, open Opener) error {
	h := SealedHandle
	if rec, err := readTPMRecord(dir); err == nil {
		h = rec.handle
	} else if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, ErrCorrupt) {
		return err
	}
	t, err := open()
	if err != nil {
		return fmt.Errorf("keys: tpm: %w", err)
	}
	defer t.Close()
	return evict(t, h)
}
