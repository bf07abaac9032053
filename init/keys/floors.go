package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Floors are named values that only ever move forward: the licence's
// offline counters and the firmware version floor. With a TPM they live in
// one NV index, so restoring an older /data (or a factory reset) cannot
// rewind them; without one they live in FloorsFile on /data, and a restored
// /data rewinds them (documented on the dashboard and in the docs).
type Floors struct {
	mu   sync.Mutex
	dir  string
	open Opener // nil: FloorsFile
	vals map[string]uint64
	// order keeps each floor in the slot it was first given, so a raise
	// rewrites one slot's bytes and nothing else moves.
	order []string
}

const (
	// FloorsIndex is the NV index (owner-defined range) holding the floors.
	FloorsIndex tpm2.TPMHandle = 0x01800E01
	// FloorsFile holds the floors on boxes without a TPM.
	FloorsFile   = "floors"
	MaxFloors    = 16
	floorNameLen = 24
	floorSlot    = floorNameLen + 8
	floorsSize   = MaxFloors * floorSlot // 512 bytes, within every TPM's NV buffer
)

var floorNameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,23}$`)

// ErrBackwards: a raise asked for a value below the current floor.
var ErrBackwards = errors.New("keys: a floor only moves forward")

// ErrFloorName: the name is not 1-24 of a-z 0-9 . _ - starting with a letter.
var ErrFloorName = errors.New("keys: floor names are 1-24 characters a-z 0-9 . _ -, starting with a letter")

// ValidFloorName reports whether name can be a floor.
func ValidFloorName(name string) bool { return floorNameRE.MatchString(name) }

// OpenFloors loads the floors from the TPM's NV index (open not nil) or
// from dir/FloorsFile.
func OpenFloors(dir string, open Opener) (*Floors, error) {
	f := &Floors{dir: dir, open: open}
	var raw []byte
	if open != nil {
		t, err := open()
		if err != nil {
			return nil, fmt.Errorf("keys: floors: %w", err)
		}
		defer t.Close()
		if raw, err = nvRead(t); err != nil {
			return nil, err
		}
	} else {
		b, err := readBounded(filepath.Join(dir, FloorsFile), floorsSize)
		switch {
		case errors.Is(err, os.ErrNotExist):
			raw = make([]byte, floorsSize)
		case err != nil:
			return nil, err
		default:
			raw = b
		}
	}
	vals, order, err := decodeFloors(raw)
	if err != nil {
		return nil, err
	}
	f.vals, f.order = vals, order
	return f, nil
}

// Hardware reports whether the floors are in the TPM.
func (f *Floors) Hardware() bool { return f.open != nil }

// All returns a copy of every floor.
func (f *Floors) All() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.vals)
}

// Raise sets floor name to v. A value below the current one is refused
// with ErrBackwards and changes nothing; an equal one is a no-op (so a
// retried request is harmless and costs no NV write).
func (f *Floors) Raise(name string, v uint64) error {
	if !ValidFloorName(name) {
		return ErrFloorName
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.vals[name]
	switch {
	case ok && v < cur:
		return fmt.Errorf("%w: %s is %d, asked %d", ErrBackwards, name, cur, v)
	case ok && v == cur:
		return nil
	case !ok && len(f.vals) >= MaxFloors:
		return fmt.Errorf("keys: floors: all %d slots used", MaxFloors)
	}
	next, order := maps.Clone(f.vals), f.order
	if !ok {
		order = append(slices.Clip(order), name)
	}
	next[name] = v
	raw := encodeFloors(next, order)
	if f.open != nil {
		t, err := f.open()
		if err != nil {
			return fmt.Errorf("keys: floors: %w", err)
		}
		defer t.Close()
		if err := nvWrite(t, raw); err != nil {
			return err
		}
	} else if err := writeAtomic(f.dir, FloorsFile, raw); err != nil {
		return err
	}
	f.vals, f.order = next, order
	return nil
}

func encodeFloors(vals map[string]uint64, order []string) []byte {
	b := make([]byte, floorsSize)
	for i, name := range order {
		copy(b[i*floorSlot:], name)
		binary.BigEndian.PutUint64(b[i*floorSlot+floorNameLen:], vals[name])
	}
	return b
}

func decodeFloors(b []byte) (map[string]uint64, []string, error) {
	if len(b) != floorsSize {
		return nil, nil, fmt.Errorf("%w: floors hold %d bytes, want %d", ErrCorrupt, len(b), floorsSize)
	}
	vals := make(map[string]uint64)
	var order []string
	for i := range MaxFloors {
		s := b[i*floorSlot : (i+1)*floorSlot]
		name := string(bytes.TrimRight(s[:floorNameLen], "\x00"))
		if name == "" {
			if !bytes.Equal(s, make([]byte, floorSlot)) {
				return nil, nil, fmt.Errorf("%w: floor slot %d", ErrCorrupt, i)
			}
			continue
		}
		if _, dup := vals[name]; dup || !ValidFloorName(name) || len(order) != i {
			return nil, nil, fmt.Errorf("%w: floor slot %d", ErrCorrupt, i)
		}
		vals[name] = binary.BigEndian.Uint64(s[floorNameLen:])
		order = append(order, name)
	}
	return vals, order, nil
}

var ownerAuth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}

// nvIndex returns the floors index's name, defining (and zeroing) the
// index on first use. Owner read/write only; NoDA so a busy box never trips
// the TPM's dictionary-attack lockout.
func nvIndex(t transport.TPM) (tpm2.TPM2BName, error) {
	if rp, err := (tpm2.NVReadPublic{NVIndex: FloorsIndex}).Execute(t); err == nil {
		pub, err := rp.NVPublic.Contents()
		if err != nil || pub.DataSize != floorsSize {
			return tpm2.TPM2BName{}, fmt.Errorf("%w: NV index %#x is not the floors index", ErrCorrupt, uint32(FloorsIndex))
		}
		return rp.NVName, nil
	}
	def := tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHOwner,
		PublicInfo: tpm2.New2B(tpm2.TPMSNVPublic{
			NVIndex: FloorsIndex,
			NameAlg: tpm2.TPMAlgSHA256,
			Attributes: tpm2.TPMANV{
				OwnerWrite: true, OwnerRead: true, NoDA: true, NT: tpm2.TPMNTOrdinary,
			},
			DataSize: floorsSize,
		}),
	}
	if _, err := def.Execute(t); err != nil {
		return tpm2.TPM2BName{}, fmt.Errorf("keys: tpm: define NV index %#x: %w", uint32(FloorsIndex), err)
	}
	pub, err := def.PublicInfo.Contents()
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	name, err := tpm2.NVName(pub)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	if err := nvWriteNamed(t, *name, make([]byte, floorsSize)); err != nil {
		return tpm2.TPM2BName{}, err
	}
	// Written once: the name changes (TPMA_NV_WRITTEN is set).
	rp, err := (tpm2.NVReadPublic{NVIndex: FloorsIndex}).Execute(t)
	if err != nil {
		return tpm2.TPM2BName{}, fmt.Errorf("keys: tpm: NV index %#x: %w", uint32(FloorsIndex), err)
	}
	return rp.NVName, nil
}

// nvChunk is the whole index: one NV_Write is atomic in the TPM, so a power
// cut never leaves half a floors table (the PC Client profile's
// MAX_NV_BUFFER_SIZE is at least 512).
const nvChunk = floorsSize

func nvRead(t transport.TPM) ([]byte, error) {
	name, err := nvIndex(t)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, floorsSize)
	for off := 0; off < floorsSize; off += nvChunk {
		rsp, err := tpm2.NVRead{
			AuthHandle: ownerAuth,
			NVIndex:    tpm2.NamedHandle{Handle: FloorsIndex, Name: name},
			Size:       nvChunk,
			Offset:     uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("keys: tpm: read NV index %#x: %w", uint32(FloorsIndex), err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

func nvWrite(t transport.TPM, b []byte) error {
	name, err := nvIndex(t)
	if err != nil {
		return err
	}
	return nvWriteNamed(t, name, b)
}

func nvWriteNamed(t transport.TPM, name tpm2.TPM2BName, b []byte) error {
	for off := 0; off < len(b); off += nvChunk {
		if _, err := (tpm2.NVWrite{
			AuthHandle: ownerAuth,
			NVIndex:    tpm2.NamedHandle{Handle: FloorsIndex, Name: name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: b[off:min(off+nvChunk, len(b))]},
			Offset:     uint16(off),
		}).Execute(t); err != nil {
			return fmt.Errorf("keys: tpm: write NV index %#x: %w", uint32(FloorsIndex), err)
		}
	}
	return nil
}
