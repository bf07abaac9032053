package qemu

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestConsoleWait(t *testing.T) {
	pr, pw := io.Pipe()
	c := newConsole(100)
	go c.run(pr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	io.WriteString(pw, "[    0.1] kernel\r\nedgepbx: edgepbxd ready t=5ms\r\n\x1b[1medgepbx: ready\x1b[0m\n  admin: https://10.0.2.15/\nedgepbx: edgepbxd re")
	for _, want := range []string{"edgepbx: edgepbxd ready t=5ms", "edgepbx: ready", "  admin: https://10.0.2.15/"} {
		got, err := c.wait(ctx, strings.TrimSpace(want)[:8])
		if err != nil || got != want {
			t.Fatalf("wait: %q, %v; want %q", got, err, want)
		}
	}
	// The second "edgepbxd ready" is still incomplete: it must be matched
	// only once its line ends, and the earlier one is not matched again.
	done := make(chan string)
	go func() {
		l, err := c.wait(ctx, "edgepbx: edgepbxd ready")
		if err != nil {
			l = err.Error()
		}
		done <- l
	}()
	io.WriteString(pw, "ady t=9ms\n")
	if got := <-done; got != "edgepbx: edgepbxd ready t=9ms" {
		t.Fatalf("restart line: %q", got)
	}
	pw.Close()
	_, err := c.wait(ctx, "edgepbx: power off")
	if err == nil || !strings.Contains(err.Error(), `"edgepbx: power off"`) || !strings.Contains(err.Error(), "| edgepbx: edgepbxd ready t=9ms") {
		t.Fatalf("closed console: %v", err)
	}
}

func TestConsoleBounds(t *testing.T) {
	c := newConsole(3)
	c.feed([]byte(strings.Repeat("x", 2*maxLineBytes+10) + "\n"))
	if got := c.all(); len(got) != 3 || len(got[0]) != maxLineBytes || len(got[2]) != 10 {
		t.Fatalf("long line split into %d lines", len(got))
	}
	for i := range 5 {
		c.feed([]byte{'a' + byte(i), '\n'})
	}
	lines := c.all()
	if len(lines) != 3 || lines[2] != "e" {
		t.Fatalf("lines = %q", lines)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.wait(ctx, "a"); err == nil {
		t.Fatal("dropped line matched")
	}
	for _, l := range c.all() {
		if len(l) > maxLineBytes {
			t.Fatalf("line of %d bytes kept", len(l))
		}
	}
}

func TestCleanLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                "plain",
		"abc\r":                "abc",
		"progress 10%\rdone":   "done",
		"\x1b[32mgreen\x1b[0m": "green",
		"a\x00b":               "ab",
		"\x1b[":                "",
	} {
		if got := cleanLine(in); got != want {
			t.Errorf("cleanLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzConsoleFeed: guest output is untrusted; whatever it prints, lines stay
// bounded in length and number and hold no line breaks.
func FuzzConsoleFeed(f *testing.F) {
	f.Add([]byte("edgepbx: ready\r\n\x1b[1mx\x1b[0m\n"), uint8(3))
	f.Add([]byte(strings.Repeat("y", maxLineBytes+3)), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, split uint8) {
		c := newConsole(8)
		n := int(split)%(len(b)+1) + 1
		for len(b) > 0 {
			k := min(n, len(b))
			c.feed(b[:k])
			b = b[k:]
		}
		c.finish()
		lines := c.all()
		if len(lines) > 8 {
			t.Fatalf("%d lines kept", len(lines))
		}
		for _, l := range lines {
			if len(l) > maxLineBytes || strings.ContainsAny(l, "\n\r") {
				t.Fatalf("bad line %q", l)
			}
		}
	})
}
