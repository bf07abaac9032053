package browsertest

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

// Page is one tab of a headless Chromium driven over the DevTools protocol:
// a minimal client (commands with ids, replies matched, events ignored).
type Page struct {
	tb      testing.TB
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

// Hang bounds every wait: it catches a hang, it measures nothing.
const Hang = 60 * time.Second

// NewPage starts Chromium (bin from Chromium) with a fresh profile and a
// phone-sized window and opens one blank tab. Chromium and its helper
// processes are killed when the test ends.
func NewPage(tb testing.TB, bin string) *Page {
	tb.Helper()
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
		"--ignore-certificate-errors", // the test server's certificate is self-signed
		"--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"--window-size=412,915", "--hide-scrollbars", "--user-data-dir="+tb.TempDir(), "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
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
	case <-time.After(Hang):
		tb.Fatal("chromium did not open its DevTools port")
	}
	ws, err := websocket.Dial(url, "", "http://127.0.0.1")
	if err != nil {
		tb.Fatalf("devtools %s: %v", url, err)
	}
	tb.Cleanup(func() { ws.Close() })
	p := &Page{tb: tb, ws: ws, pending: map[int64]chan cdpReply{}}
	go p.read()
	var tgt struct {
		TargetID string `json:"targetId"`
	}
	p.call("", "Target.createTarget", map[string]any{"url": "about:blank"}, &tgt)
	var att struct {
		SessionID string `json:"sessionId"`
	}
	p.call("", "Target.attachToTarget", map[string]any{"targetId": tgt.TargetID, "flatten": true}, &att)
	p.session = att.SessionID
	return p
}

func (p *Page) read() {
	for {
		var r cdpReply
		if err := websocket.JSON.Receive(p.ws, &r); err != nil {
			p.mu.Lock()
			for id, ch := range p.pending {
				close(ch)
				delete(p.pending, id)
			}
			p.mu.Unlock()
			return
		}
		if r.ID == 0 {
			continue // an event
		}
		p.mu.Lock()
		ch := p.pending[r.ID]
		delete(p.pending, r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// send runs one command and returns its error instead of failing the test.
func (p *Page) send(session, method string, params any, out any) error {
	p.mu.Lock()
	p.nextID++
	id := p.nextID
	ch := make(chan cdpReply, 1)
	p.pending[id] = ch
	p.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	if err := websocket.JSON.Send(p.ws, msg); err != nil {
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
	case <-time.After(Hang):
		return fmt.Errorf("%s: no answer", method)
	}
}

func (p *Page) call(session, method string, params any, out any) {
	p.tb.Helper()
	if err := p.send(session, method, params, out); err != nil {
		p.tb.Fatal(err)
	}
}

// Call runs one DevTools command on the page (e.g. Emulation.*).
func (p *Page) Call(method string, params any, out any) {
	p.tb.Helper()
	p.call(p.session, method, params, out)
}

// Try evaluates js in the page (promises awaited) into out.
func (p *Page) Try(js string, out any) error {
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
	if err := p.send(p.session, "Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true, "awaitPromise": true}, &r); err != nil {
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

// Eval is Try failing the test on an error.
func (p *Page) Eval(js string, out any) {
	p.tb.Helper()
	if err := p.Try(js, out); err != nil {
		p.tb.Fatal(err)
	}
}

// Str evaluates js to a string.
func (p *Page) Str(js string) string {
	p.tb.Helper()
	var s string
	p.Eval(js, &s)
	return s
}

// WaitFor polls a JavaScript condition until it holds; evaluation errors
// during a navigation are expected and retried.
func (p *Page) WaitFor(cond string) {
	p.tb.Helper()
	deadline := time.Now().Add(Hang)
	var last error
	for time.Now().Before(deadline) {
		var ok bool
		if last = p.Try("!!("+cond+")", &ok); last == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	var where string
	p.Try("location.href + ' ' + document.body.innerText.slice(0, 800)", &where)
	p.tb.Fatalf("waiting for %s: %v; page: %s", cond, last, where)
}

// Open navigates and waits for the page at path to have loaded.
func (p *Page) Open(url, path string) {
	p.tb.Helper()
	p.Try(`window.__oldPage = true`, nil) // about:blank or an error page may refuse; then there is no old page to mistake
	p.call(p.session, "Page.navigate", map[string]any{"url": url}, nil)
	p.WaitFor(fmt.Sprintf(`window.__oldPage === undefined && document.readyState === "complete" && location.pathname === %q`, path))
}

// Fill sets form fields by CSS selector, as typing would (input events).
func (p *Page) Fill(fields map[string]string) {
	p.tb.Helper()
	for sel, v := range fields {
		p.Eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) throw new Error("no " + %q);
			el.value = %q; el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); })()`, sel, sel, v), nil)
	}
}

// Click clicks the element the selector finds.
func (p *Page) Click(sel string) {
	p.tb.Helper()
	p.Eval(fmt.Sprintf(`(() => { const el = document.querySelector(%q); if (!el) throw new Error("no " + %q); el.click(); })()`, sel, sel), nil)
}

// Submit submits a form the way a click on its button does (the page's
// script handles it) after clearing its result line (sel, may be "").
func (p *Page) Submit(form, result string) {
	p.tb.Helper()
	p.Eval(fmt.Sprintf(`(() => { const r = %q && document.querySelector(%q); if (r) r.textContent = ""; document.querySelector(%q).requestSubmit(); })()`,
		result, result, form), nil)
}

// SubmitNav submits a form whose success loads a page and waits until the
// new document has replaced the old one.
func (p *Page) SubmitNav(form string) {
	p.tb.Helper()
	p.Eval(`window.__oldPage = true`, nil)
	p.Submit(form, "")
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete"`)
}

// Result waits for an element's text to be non-empty and returns it.
func (p *Page) Result(sel string) string {
	p.tb.Helper()
	p.WaitFor(fmt.Sprintf(`document.querySelector(%q) && document.querySelector(%q).textContent.trim() !== ""`, sel, sel))
	return strings.TrimSpace(p.Str(fmt.Sprintf(`document.querySelector(%q).textContent`, sel)))
}

// Viewport emulates a phone screen width×height CSS pixels wide.
func (p *Page) Viewport(width, height int) {
	p.tb.Helper()
	p.call(p.session, "Emulation.setDeviceMetricsOverride", map[string]any{"width": width, "height": height,
		"deviceScaleFactor": 1, "mobile": true}, nil)
}

// Overflow reports what sticks out of a screen width CSS pixels wide: ""
// when document.documentElement.scrollWidth <= innerWidth == width, else
// the widths and the outermost elements reaching past the right edge. (A
// phone, like the emulation, zooms out to fit wider content: innerWidth
// grows.)
func (p *Page) Overflow(width int) string {
	p.tb.Helper()
	return p.Str(fmt.Sprintf(`(() => {
		const w = %d, iw = window.innerWidth, sw = document.documentElement.scrollWidth;
		if (sw <= iw && iw === w) return "";
		const out = [];
		for (const el of document.body.querySelectorAll("*")) {
			const r = el.getBoundingClientRect();
			if (r.right > w + 0.5 && !(el.parentElement && el.parentElement.getBoundingClientRect().right > w + 0.5)) {
				out.push(el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().replace(/\s+/g, ".") : "") + " right=" + Math.round(r.right));
			}
			if (out.length >= 8) break;
		}
		return "scrollWidth " + sw + ", innerWidth " + iw + ", screen " + w + ": " + out.join(", ");
	})()`, width))
}
