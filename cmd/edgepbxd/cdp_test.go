package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// browser drives headless Chromium over the DevTools protocol: a minimal
// client (commands with ids, replies matched, events ignored) on one page.
type browser struct {
	t       *testing.T
	ws      *websocket.Conn
	session string

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan cdpReply
}

type cdpReply struct {
	ID     int64           `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// cdpHang bounds every wait: it catches a hang, it measures nothing.
const cdpHang = 60 * time.Second

func newBrowser(t *testing.T, bin string) *browser {
	t.Helper()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--ignore-certificate-errors", // the dev box's certificate is self-signed
		"--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"--window-size=412,915", "--user-data-dir="+t.TempDir(), "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // chromium and its helpers: its own process group
		cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	var url string
	select {
	case url = <-found:
	case <-time.After(cdpHang):
		t.Fatal("chromium did not open its DevTools port")
	}
	ws, err := websocket.Dial(url, "", "http://127.0.0.1")
	if err != nil {
		t.Fatalf("devtools %s: %v", url, err)
	}
	t.Cleanup(func() { ws.Close() })
	b := &browser{t: t, ws: ws, pending: map[int64]chan cdpReply{}}
	go b.read()
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	b.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &tgt)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	b.call("", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &att)
	b.session = att.SessionID
	return b
}

func (b *browser) read() {
	for {
		var r cdpReply
		if err := websocket.JSON.Receive(b.ws, &r); err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		if r.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.pending[r.ID]
		delete(b.pending, r.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// send runs one command and returns its error instead of failing the test.
func (b *browser) send(session, method string, params any, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	if err := websocket.JSON.Send(b.ws, msg); err != nil {
		return err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: devtools connection closed", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-time.After(cdpHang):
		return fmt.Errorf("%s: no answer", method)
	}
}

func (b *browser) call(session, method string, params any, out any) {
	b.t.Helper()
	if err := b.send(session, method, params, out); err != nil {
		b.t.Fatal(err)
	}
}

// try evaluates js in the page (promises awaited) into out.
func (b *browser) try(js string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := b.send(b.session, "Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("%s: %s %s", js, r.Exception.Text, r.Exception.Exception.Description)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

func (b *browser) eval(js string, out any) {
	b.t.Helper()
	if err := b.try(js, out); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) str(js string) string {
	b.t.Helper()
	var s string
	b.eval(js, &s)
	return s
}

// waitFor polls a JavaScript condition until it holds; evaluation errors
// during a navigation are expected and retried.
func (b *browser) waitFor(cond string) {
	b.t.Helper()
	deadline := time.Now().Add(cdpHang)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		if last = b.try("!!("+cond+")", &ok); last == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var where string
	b.try("location.href + ' ' + document.body.innerText.slice(0, 500)", &where)
	b.t.Fatalf("waiting for %s: %v; page: %s", cond, last, where)
}

// open navigates and waits for the page at path to have loaded.
func (b *browser) open(url, path string) {
	b.t.Helper()
	b.try(`window.__oldPage = true`, nil) // about:blank or an error page may refuse; then there is no old page to mistake
	b.call(b.session, "Page.navigate", map[string]any{"url": url}, nil)
	b.waitFor(fmt.Sprintf(`window.__oldPage === undefined && document.readyState === "complete" && location.pathname === %q`, path))
}

// fill sets form fields by CSS selector.
func (b *browser) fill(fields map[string]string) {
	b.t.Helper()
	for sel, v := range fields {
		b.eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) throw new Error("no " + %q); el.value = %q; })()`, sel, sel, v), nil)
	}
}

// submit clears the form's result line, submits it the way a click on its
// button does (the page's script handles it), and returns the selector of
// the result line.
func (b *browser) submit(form string) string {
	b.t.Helper()
	res := form + " [data-result]"
	b.eval(fmt.Sprintf(`(() => { const r = document.querySelector(%q); if (r) r.textContent = ""; document.querySelector(%q).requestSubmit(); })()`, res, form), nil)
	return res
}

// submitNav submits a form whose success loads a page (data-next) and
// waits until the new document has replaced the old one.
func (b *browser) submitNav(form string) {
	b.t.Helper()
	b.eval(`window.__oldPage = true`, nil)
	b.submit(form)
	b.waitFor(`window.__oldPage === undefined && document.readyState === "complete"`)
}

// result waits for a form's result line and returns it.
func (b *browser) result(sel string) string {
	b.t.Helper()
	b.waitFor(fmt.Sprintf(`document.querySelector(%q) && document.querySelector(%q).textContent !== ""`, sel, sel))
	return strings.TrimSpace(b.str(fmt.Sprintf(`document.querySelector(%q).textContent`, sel)))
}
