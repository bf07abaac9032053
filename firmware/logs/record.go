package logs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// On-disk record of the syslog queue:
//
//	len    uint32 LE  length of payload
//	crc    uint32 LE  CRC-32C of payload
//	payload: seq uint64 LE, kind byte, then the item's fields
//
// Fields are a uvarint (sequence number), a varint (Unix nanoseconds) and
// strings as uvarint length + bytes. Nothing in a record is trusted: the
// data partition can be edited by whoever holds the disk, so the decoder
// bounds every length and formatting escapes every string as for the wire.
const (
	recHeader = 8
	// maxRecord bounds one payload: events clip fields to 128 bytes and
	// audit fields to 512, so real records are far below it.
	maxRecord = 16 << 10
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errRecord is a record that does not decode: a torn write or corruption.
var errRecord = errors.New("syslog queue: bad record")

// appendRecord appends the framed record of it with sequence number seq.
func appendRecord(b []byte, seq uint64, it *item) []byte {
	start := len(b)
	b = append(b, make([]byte, recHeader)...)
	b = binary.LittleEndian.AppendUint64(b, seq)
	b = append(b, byte(it.kind))
	switch it.kind {
	case itemEvent:
		e := &it.ev
		b = binary.AppendUvarint(b, e.Seq)
		b = binary.AppendVarint(b, timeNanos(e.Time))
		for _, s := range [...]string{string(e.Kind), e.Source, e.Transport, e.User, e.Display, e.UserAgent, e.Reason} {
			b = appendString(b, s)
		}
	case itemAudit:
		a := &it.au
		b = binary.AppendUvarint(b, a.Seq)
		b = binary.AppendVarint(b, timeNanos(a.Time))
		for _, s := range [...]string{a.Actor, a.Source, a.Action, a.Target, a.Outcome, a.Detail, a.Hash} {
			b = appendString(b, s)
		}
	case itemSummary:
		sum := it.sum
		if sum == nil {
			sum = &summary{}
		}
		b = binary.AppendVarint(b, timeNanos(sum.time))
		b = appendString(b, sum.msgid)
		b = appendString(b, sum.text)
		b = binary.AppendUvarint(b, uint64(len(sum.params)))
		for _, p := range sum.params {
			b = appendString(appendString(b, p.Name), p.Value)
		}
	}
	payload := b[start+recHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, crcTable))
	return b
}

func timeNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// recordLen reads a record header: the payload length and its CRC.
func recordLen(h []byte) (int, uint32, error) {
	if len(h) < recHeader {
		return 0, 0, fmt.Errorf("%w: short header", errRecord)
	}
	n := binary.LittleEndian.Uint32(h)
	if n < 9 || n > maxRecord {
		return 0, 0, fmt.Errorf("%w: length %d", errRecord, n)
	}
	return int(n), binary.LittleEndian.Uint32(h[4:]), nil
}

// decodeRecord checks the CRC of payload and decodes it.
func decodeRecord(payload []byte, crc uint32) (uint64, item, error) {
	if crc32.Checksum(payload, crcTable) != crc {
		return 0, item{}, fmt.Errorf("%w: checksum", errRecord)
	}
	return decodePayload(payload)
}

func decodePayload(p []byte) (uint64, item, error) {
	var it item
	if len(p) < 9 || len(p) > maxRecord {
		return 0, it, fmt.Errorf("%w: payload length %d", errRecord, len(p))
	}
	seq := binary.LittleEndian.Uint64(p)
	d := decoder{b: p[9:]}
	it.kind = itemKind(p[8])
	switch it.kind {
	case itemEvent:
		e := &it.ev
		e.Seq = d.uvarint()
		e.Time = d.time()
		var kind string
		for _, s := range [...]*string{&kind, &e.Source, &e.Transport, &e.User, &e.Display, &e.UserAgent, &e.Reason} {
			*s = d.string()
		}
		e.Kind = Kind(kind)
	case itemAudit:
		a := &it.au
		a.Seq = d.uvarint()
		a.Time = d.time()
		for _, s := range [...]*string{&a.Actor, &a.Source, &a.Action, &a.Target, &a.Outcome, &a.Detail, &a.Hash} {
			*s = d.string()
		}
	case itemSummary:
		sum := &summary{time: d.time(), msgid: d.string(), text: d.string()}
		n := d.uvarint()
		if n > uint64(len(d.b)/2) { // each parameter takes two bytes at least
			return 0, item{}, fmt.Errorf("%w: %d parameters", errRecord, n)
		}
		for range n {
			sum.params = append(sum.params, SDParam{Name: d.string(), Value: d.string()})
		}
		it.sum = sum
	default:
		return 0, item{}, fmt.Errorf("%w: kind %d", errRecord, p[8])
	}
	if d.err != nil {
		return 0, item{}, d.err
	}
	if len(d.b) != 0 {
		return 0, item{}, fmt.Errorf("%w: %d trailing bytes", errRecord, len(d.b))
	}
	return seq, it, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad number", errRecord)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad time", errRecord)
		return time.Time{}
	}
	d.b = d.b[n:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%w: string of %d bytes, %d left", errRecord, n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
