package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// UKISection is one PE section appended to systemd-stub to make a unified
// kernel image (.osrel, .cmdline, .initrd, .linux).
type UKISection struct {
	Name string // at most 8 bytes, e.g. ".linux"
	Data []byte
}

// PE/COFF offsets we touch (PE32+ only: the stubs we use are x86-64 and
// arm64).
const (
	peSigOffset      = 0x3c
	coffSize         = 20
	sectionHdrSize   = 40
	pe32PlusMagic    = 0x20b
	optSectionAlign  = 32
	optFileAlign     = 36
	optSizeOfImage   = 56
	optSizeOfHeaders = 60
	optCheckSum      = 64
	// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
	scnReadData = 0x40000040
	// ukiAlign keeps every added section page aligned in memory.
	ukiAlign = 0x1000
)

// BuildUKI appends secs to the PE image stub (systemd-stub) as new
// sections, in order, each page aligned in memory and file-aligned on
// disk, and fixes the header counts and SizeOfImage. The result is
// deterministic: it depends only on its inputs.
func BuildUKI(stub []byte, secs []UKISection) ([]byte, error) {
	if len(stub) < 0x40 || stub[0] != 'M' || stub[1] != 'Z' {
		return nil, errors.New("uki: stub is not a PE image (no MZ header)")
	}
	peOff := int(binary.LittleEndian.Uint32(stub[peSigOffset:]))
	if peOff < 0x40 || peOff+4+coffSize > len(stub) || !bytes.Equal(stub[peOff:peOff+4], []byte("PE\x00\x00")) {
		return nil, errors.New("uki: stub has no PE signature")
	}
	coff := peOff + 4
	nsec := int(binary.LittleEndian.Uint16(stub[coff+2:]))
	optLen := int(binary.LittleEndian.Uint16(stub[coff+16:]))
	opt := coff + coffSize
	if opt+optLen > len(stub) || optLen < optCheckSum+4 || binary.LittleEndian.Uint16(stub[opt:]) != pe32PlusMagic {
		return nil, errors.New("uki: stub is not PE32+")
	}
	secAlign := binary.LittleEndian.Uint32(stub[opt+optSectionAlign:])
	fileAlign := binary.LittleEndian.Uint32(stub[opt+optFileAlign:])
	sizeHdrs := binary.LittleEndian.Uint32(stub[opt+optSizeOfHeaders:])
	if secAlign == 0 || fileAlign == 0 || ukiAlign%secAlign != 0 {
		return nil, fmt.Errorf("uki: stub alignments %#x/%#x unsupported", secAlign, fileAlign)
	}
	table := opt + optLen
	tableEnd := table + (nsec+len(secs))*sectionHdrSize
	if tableEnd > int(sizeHdrs) || int(sizeHdrs) > len(stub) {
		return nil, fmt.Errorf("uki: no room for %d more section headers in the stub's %#x header bytes", len(secs), sizeHdrs)
	}
	var vaEnd uint64
	for i := range nsec {
		h := stub[table+i*sectionHdrSize:]
		if n := bytes.TrimRight(h[:8], "\x00"); containsName(secs, string(n)) {
			return nil, fmt.Errorf("uki: stub already has a %s section", n)
		}
		vs := uint64(binary.LittleEndian.Uint32(h[8:]))
		va := uint64(binary.LittleEndian.Uint32(h[12:]))
		vaEnd = max(vaEnd, va+vs)
	}
	out := bytes.Clone(stub)
	va := alignUp(vaEnd, ukiAlign)
	for i, s := range secs {
		if len(s.Name) == 0 || len(s.Name) > 8 {
			return nil, fmt.Errorf("uki: section name %q: want 1..8 bytes", s.Name)
		}
		off := alignUp(uint64(len(out)), uint64(fileAlign))
		raw := alignUp(uint64(len(s.Data)), uint64(fileAlign))
		if va+uint64(len(s.Data)) > 1<<32-1 || off+raw > 1<<32-1 {
			return nil, fmt.Errorf("uki: section %s does not fit a 32-bit PE image", s.Name)
		}
		out = append(out, make([]byte, off-uint64(len(out)))...)
		out = append(out, s.Data...)
		out = append(out, make([]byte, raw-uint64(len(s.Data)))...)
		h := out[table+(nsec+i)*sectionHdrSize : table+(nsec+i+1)*sectionHdrSize]
		clear(h)
		copy(h[:8], s.Name)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(s.Data)))
		binary.LittleEndian.PutUint32(h[12:], uint32(va))
		binary.LittleEndian.PutUint32(h[16:], uint32(raw))
		binary.LittleEndian.PutUint32(h[20:], uint32(off))
		binary.LittleEndian.PutUint32(h[36:], scnReadData)
		va = alignUp(va+uint64(len(s.Data)), ukiAlign)
	}
	binary.LittleEndian.PutUint16(out[coff+2:], uint16(nsec+len(secs)))
	binary.LittleEndian.PutUint32(out[opt+optSizeOfImage:], uint32(va))
	// No Authenticode signature here: a zero checksum is what
	// firmware expects of an unsigned image.
	binary.LittleEndian.PutUint32(out[opt+optCheckSum:], 0)
	return out, nil
}

func containsName(secs []UKISection, name string) bool {
	for _, s := range secs {
		if s.Name == name {
			return true
		}
	}
	return false
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }
