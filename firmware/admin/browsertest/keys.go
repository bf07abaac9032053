package browsertest

import "unicode/utf8"

// key is one key as DevTools' Input.dispatchKeyEvent wants it (US layout).
type key struct {
	key, code, text string
	vk              int
}

var namedKeys = map[string]key{
	"Tab":       {key: "Tab", code: "Tab", vk: 9},
	"Enter":     {key: "Enter", code: "Enter", text: "\r", vk: 13},
	"Space":     {key: " ", code: "Space", text: " ", vk: 32},
	"Escape":    {key: "Escape", code: "Escape", vk: 27},
	"ArrowDown": {key: "ArrowDown", code: "ArrowDown", vk: 40},
	"ArrowUp":   {key: "ArrowUp", code: "ArrowUp", vk: 38},
}

// Modifier bits of Input.dispatchKeyEvent.
const (
	Alt   = 1
	Ctrl  = 2
	Meta  = 4
	Shift = 8
)

// Press sends one real key press (keyDown, keyUp) to the page, as a user's
// keyboard would: default actions (focus moves, form submission, button
// activation) are the browser's, not a script's. name is a key of
// namedKeys or one printable character.
func (p *Page) Press(name string, modifiers int) {
	p.tb.Helper()
	k, ok := namedKeys[name]
	if !ok {
		r, n := utf8.DecodeRuneInString(name)
		if n != len(name) || r < ' ' {
			p.tb.Fatalf("Press: no key %q", name)
		}
		k = key{key: name, text: name}
		if r < 128 {
			up := r
			if up >= 'a' && up <= 'z' {
				up -= 'a' - 'A'
			}
			k.vk = int(up)
		}
	}
	down := map[string]any{"type": "rawKeyDown", "key": k.key, "code": k.code, "windowsVirtualKeyCode": k.vk,
		"nativeVirtualKeyCode": k.vk, "modifiers": modifiers}
	if k.text != "" {
		down["type"] = "keyDown"
		down["text"] = k.text
		down["unmodifiedText"] = k.text
	}
	p.call(p.session, "Input.dispatchKeyEvent", down, nil)
	p.call(p.session, "Input.dispatchKeyEvent", map[string]any{"type": "keyUp", "key": k.key, "code": k.code,
		"windowsVirtualKeyCode": k.vk, "nativeVirtualKeyCode": k.vk, "modifiers": modifiers}, nil)
}

// Type presses one key per character of s.
func (p *Page) Type(s string) {
	p.tb.Helper()
	for _, r := range s {
		p.Press(string(r), 0)
	}
}
