package slots

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"

	"github.com/google/uuid"
)

// EFI_LOAD_OPTION and device-path encoding (UEFI 2.10, 3.1.3 and 10.3).
// u-root's pkg/uefivars/boot only parses load options; writing one with a
// hard-drive node is this small encoder.
const (
	loadOptionActive = 0x1

	dpMedia     = 0x04
	dpMediaHD   = 0x01
	dpMediaFile = 0x04
	dpEnd       = 0x7f
	dpEndEntire = 0xff

	hdNodeLen = 42
	mbrGPT    = 0x02 // partition format: GPT
	sigGUID   = 0x02 // signature type: GUID

	// maxLoadOption bounds what is read from NVRAM.
	maxLoadOption = 4096
)

// loadOption is the part of a Boot#### variable edgepbx reads and writes.
type loadOption struct {
	Attributes  uint32
	Description string
	// HD node: the partition the loader is on.
	PartNumber uint32
	PartStart  uint64 // LBA
	PartSize   uint64 // LBAs
	PartGUID   uuid.UUID
	HasHD      bool
	Path       string // file path node, e.g. \EFI\BOOT\BOOTX64.EFI
}

// guidBytes is a GUID in EFI byte order (first three fields little-endian).
func guidBytes(u uuid.UUID) [16]byte {
	var b [16]byte
	copy(b[:], u[:])
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	return b
}

func guidFromEFI(b []byte) uuid.UUID {
	var u uuid.UUID
	copy(u[:], b)
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	return u
}

func utf16z(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return append(b, 0, 0)
}

// marshal encodes the option: HD(part) / File(path) / End.
func (o loadOption) marshal() []byte {
	var dp bytes.Buffer
	hd := make([]byte, 0, hdNodeLen)
	hd = append(hd, dpMedia, dpMediaHD)
	hd = binary.LittleEndian.AppendUint16(hd, hdNodeLen)
	hd = binary.LittleEndian.AppendUint32(hd, o.PartNumber)
	hd = binary.LittleEndian.AppendUint64(hd, o.PartStart)
	hd = binary.LittleEndian.AppendUint64(hd, o.PartSize)
	g := guidBytes(o.PartGUID)
	hd = append(hd, g[:]...)
	hd = append(hd, mbrGPT, sigGUID)
	dp.Write(hd)
	path := utf16z(o.Path)
	dp.Write([]byte{dpMedia, dpMediaFile})
	binary.Write(&dp, binary.LittleEndian, uint16(4+len(path)))
	dp.Write(path)
	dp.Write([]byte{dpEnd, dpEndEntire, 4, 0})

	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, o.Attributes)
	binary.Write(&b, binary.LittleEndian, uint16(dp.Len()))
	b.Write(utf16z(o.Description))
	b.Write(dp.Bytes())
	return b.Bytes()
}

var errLoadOption = errors.New("malformed EFI load option")

// parseLoadOption decodes a Boot#### variable's data. NVRAM is written by
// the firmware, other OSes and setup menus: every length is checked.
func parseLoadOption(b []byte) (loadOption, error) {
	var o loadOption
	if len(b) > maxLoadOption {
		return o, fmt.Errorf("%w: %d bytes", errLoadOption, len(b))
	}
	if len(b) < 6 {
		return o, fmt.Errorf("%w: %d bytes", errLoadOption, len(b))
	}
	o.Attributes = binary.LittleEndian.Uint32(b)
	dpLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[6:]
	desc, n, ok := cutUTF16z(rest)
	if !ok {
		return o, fmt.Errorf("%w: unterminated description", errLoadOption)
	}
	o.Description = desc
	rest = rest[n:]
	if dpLen > len(rest) {
		return o, fmt.Errorf("%w: device path length %d > %d", errLoadOption, dpLen, len(rest))
	}
	dp := rest[:dpLen]
	for len(dp) > 0 {
		if len(dp) < 4 {
			return o, fmt.Errorf("%w: short device path node", errLoadOption)
		}
		typ, sub, l := dp[0], dp[1], int(binary.LittleEndian.Uint16(dp[2:]))
		if l < 4 || l > len(dp) {
			return o, fmt.Errorf("%w: device path node length %d", errLoadOption, l)
		}
		node := dp[4:l]
		switch {
		case typ == dpEnd && sub == dpEndEntire:
			return o, nil
		case typ == dpMedia && sub == dpMediaHD:
			if l != hdNodeLen {
				return o, fmt.Errorf("%w: hard drive node length %d", errLoadOption, l)
			}
			if node[36] == mbrGPT && node[37] == sigGUID {
				o.HasHD = true
				o.PartNumber = binary.LittleEndian.Uint32(node)
				o.PartStart = binary.LittleEndian.Uint64(node[4:])
				o.PartSize = binary.LittleEndian.Uint64(node[12:])
				o.PartGUID = guidFromEFI(node[20:36])
			}
		case typ == dpMedia && sub == dpMediaFile:
			p, _, ok := cutUTF16z(node)
			if !ok {
				p = decodeUTF16(node)
			}
			o.Path = p
		}
		dp = dp[l:]
	}
	return o, fmt.Errorf("%w: device path without end node", errLoadOption)
}

// cutUTF16z decodes a NUL-terminated UTF-16LE string, returning it and the
// bytes it took including the NUL.
func cutUTF16z(b []byte) (string, int, bool) {
	for i := 0; i+1 < len(b); i += 2 {
		if b[i] == 0 && b[i+1] == 0 {
			return decodeUTF16(b[:i]), i + 2, true
		}
	}
	return "", 0, false
}

func decodeUTF16(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return strings.TrimRight(string(utf16.Decode(u)), "\x00")
}

// parseOrder decodes BootOrder (a list of u16).
func parseOrder(b []byte) ([]uint16, error) {
	if len(b)%2 != 0 || len(b) > 2*1024 {
		return nil, fmt.Errorf("BootOrder: %d bytes", len(b))
	}
	o := make([]uint16, len(b)/2)
	for i := range o {
		o[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return o, nil
}

func encodeOrder(o []uint16) []byte {
	b := make([]byte, 0, 2*len(o))
	for _, n := range o {
		b = binary.LittleEndian.AppendUint16(b, n)
	}
	return b
}
