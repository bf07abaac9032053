package qemu

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
)

// maxLineBytes bounds one console line; longer output is split.
const maxLineBytes = 4096

// console keeps the guest's console output as lines, bounded to the last
// limit lines, and a read cursor for WaitLine: each match moves the cursor past
// the matched line, so successive waits see lines in order and a line that
// arrived before the wait still counts.
type console struct {
	mu      sync.Mutex
	cond    chan struct{} // closed and replaced whenever lines arrive or input ends
	lines   []string
	first   int // absolute index of lines[0]
	cursor  int // absolute index of the next line WaitLine looks at
	limit   int
	closed  bool
	partial []byte
}

func newConsole(limit int) *console {
	return &console{cond: make(chan struct{}), limit: limit}
}

// run reads r until EOF, copying raw bytes to log when set.
func (c *console) run(r io.Reader, log io.Writer) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if log != nil {
				log.Write(buf[:n])
			}
			c.feed(buf[:n])
		}
		if err != nil {
			c.finish()
			return
		}
	}
}

func (c *console) feed(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	added := false
	for len(b) > 0 {
		room := maxLineBytes - len(c.partial)
		i := bytes.IndexByte(b, '\n')
		switch {
		case i >= 0 && i <= room:
			c.partial = append(c.partial, b[:i]...)
			b = b[i+1:]
		case len(b) >= room:
			// Over-long line: cut it, the rest starts a new line.
			c.partial = append(c.partial, b[:room]...)
			b = b[room:]
		default:
			c.partial = append(c.partial, b...)
			b = nil
			continue
		}
		c.addLocked(string(c.partial))
		c.partial = c.partial[:0]
		added = true
	}
	if added {
		c.signalLocked()
	}
}

func (c *console) addLocked(s string) {
	c.lines = append(c.lines, cleanLine(s))
	if len(c.lines) > c.limit {
		drop := len(c.lines) - c.limit
		c.lines = append(c.lines[:0:0], c.lines[drop:]...)
		c.first += drop
	}
}

func (c *console) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.addLocked(string(c.partial))
		c.partial = nil
	}
	c.closed = true
	c.signalLocked()
}

func (c *console) signalLocked() {
	close(c.cond)
	c.cond = make(chan struct{})
}

// cleanLine drops carriage returns and terminal escape sequences, so prefixes
// match what a person sees.
func cleanLine(s string) string {
	if i := strings.LastIndexByte(strings.TrimRight(s, "\r"), '\r'); i >= 0 {
		s = s[i+1:]
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == 0x1b && i+1 < len(s) && s[i+1] == '[':
			// Skip a CSI sequence: ESC [ params final-byte.
			i += 2
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
		case ch == '\r' || ch == 0:
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// wait returns the first line at or after the cursor whose text (leading
// blanks ignored) starts with one of prefixes, and moves the cursor past it.
func (c *console) wait(ctx context.Context, prefixes ...string) (string, error) {
	if len(prefixes) == 0 {
		return "", fmt.Errorf("waiting for console line: no prefix given")
	}
	prefix := strings.Join(prefixes, `" or "`)
	for {
		c.mu.Lock()
		start := max(c.cursor, c.first)
		for i := start - c.first; i < len(c.lines); i++ {
			if hasAnyPrefix(strings.TrimLeft(c.lines[i], " \t"), prefixes) {
				c.cursor = c.first + i + 1
				line := c.lines[i]
				c.mu.Unlock()
				return line, nil
			}
		}
		// Lines already looked at need not be looked at again.
		c.cursor = c.first + len(c.lines)
		closed, ch := c.closed, c.cond
		c.mu.Unlock()
		if closed {
			return "", fmt.Errorf("waiting for console line \"%s\": console closed (QEMU exited)\n%s", prefix, c.tail(40))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for console line \"%s\": %w\n%s", prefix, ctx.Err(), c.tail(40))
		}
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// tail formats the last n lines for error messages.
func (c *console) tail(n int) string {
	lines := c.last(n)
	var b strings.Builder
	fmt.Fprintf(&b, "--- last %d console lines ---\n", len(lines))
	for _, l := range lines {
		b.WriteString("| ")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	b.WriteString("--- end of console ---")
	return b.String()
}

func (c *console) last(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > len(c.lines) {
		n = len(c.lines)
	}
	return append([]string(nil), c.lines[len(c.lines)-n:]...)
}

// all returns every retained line.
func (c *console) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}
