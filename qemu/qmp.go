package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a minimal QEMU Machine Protocol client: one command at a time,
// asynchronous events are skipped.
type qmp struct {
	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
}

type qmpMsg struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// maxQMPLine bounds one message from QEMU.
const maxQMPLine = 1 << 20

// dialQMP connects to QEMU's QMP socket, retrying while QEMU creates it, and
// negotiates capabilities. exited reports QEMU ending early.
func dialQMP(ctx context.Context, path string, exited <-chan struct{}) (*qmp, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: connect %s: %w", path, ctx.Err())
		case <-exited:
			return nil, errors.New("qmp: QEMU exited before its monitor came up")
		case <-time.After(20 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, rd: bufio.NewReaderSize(conn, 64<<10)}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	greet, err := q.read()
	if err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: no greeting: %v", err)
	}
	if _, err := q.execLocked("qmp_capabilities"); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return q, nil
}

func (q *qmp) read() (qmpMsg, error) {
	var m qmpMsg
	line, err := q.rd.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		// Long message: assemble it, within bounds.
		buf := append([]byte(nil), line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(buf) < maxQMPLine {
			line, err = q.rd.ReadSlice('\n')
			buf = append(buf, line...)
		}
		if err != nil {
			return m, fmt.Errorf("qmp: read: message over %d bytes: %w", maxQMPLine, err)
		}
		line = buf
	} else if err != nil {
		return m, fmt.Errorf("qmp: read: %w", err)
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("qmp: bad message: %w", err)
	}
	return m, nil
}

// exec runs one command and returns its "return" value.
func (q *qmp) exec(ctx context.Context, cmd string) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	q.conn.SetDeadline(dl)
	defer q.conn.SetDeadline(time.Time{})
	return q.execLocked(cmd)
}

func (q *qmp) execLocked(cmd string) (json.RawMessage, error) {
	req, _ := json.Marshal(map[string]string{"execute": cmd})
	if _, err := q.conn.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.read()
		if err != nil {
			return nil, fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if m.Event != "" {
			continue
		}
		if m.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		if m.Return != nil {
			return m.Return, nil
		}
	}
}

func (q *qmp) close() error { return q.conn.Close() }
