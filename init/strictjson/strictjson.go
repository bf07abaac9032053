// Package strictjson decodes JSON from untrusted peers strictly: object
// keys must name a field of the target exactly (encoding/json matches them
// case-insensitively, so "loCAl_port" would set LocalPort), a key may not
// repeat (encoding/json keeps the last, so two readers of one body can
// disagree), unknown fields and anything after the one value are refused.
//
// It serves every trust boundary that takes JSON: PID 1's control socket,
// the admin API and the licence server. It depends on the standard library
// only, so PID 1 can link it.
package strictjson

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// Kinds of refusal; every *Error wraps one of these.
var (
	ErrSyntax    = errors.New("malformed JSON")
	ErrUnknown   = errors.New("unknown field")
	ErrDuplicate = errors.New("duplicate field")
	ErrTrailing  = errors.New("trailing data after the JSON value")
	ErrType      = errors.New("wrong type")
	ErrDepth     = errors.New("nested too deeply")
)

// MaxDepth bounds nesting of objects and arrays.
const MaxDepth = 64

// Error is a refusal naming the field. Field is the path from the top in
// Go-like form ("access.zones[2].name"), Pointer the same as an RFC 6901
// JSON pointer ("/access/zones/2/name") for problem+json answers; both are
// "" for the value as a whole.
type Error struct {
	Field   string
	Pointer string
	Kind    error
	Err     error // detail from encoding/json, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Field != "" {
		fmt.Fprintf(&b, "field %q: ", e.Field)
	}
	b.WriteString(e.Kind.Error())
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap lets errors.Is see the kind and the detail.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// seg is one step of a path: an object key or an array index.
type seg struct {
	key   string
	index int // -1 for a key
}

func newError(path []seg, kind, err error) *Error {
	var f, p strings.Builder
	for _, s := range path {
		p.WriteByte('/')
		if s.index >= 0 {
			fmt.Fprintf(&f, "[%d]", s.index)
			p.WriteString(strconv.Itoa(s.index))
			continue
		}
		if f.Len() > 0 {
			f.WriteByte('.')
		}
		f.WriteString(s.key)
		p.WriteString(strings.ReplaceAll(strings.ReplaceAll(s.key, "~", "~0"), "/", "~1"))
	}
	return &Error{Field: f.String(), Pointer: p.String(), Kind: kind, Err: err}
}

// typeError turns encoding/json's error, whose Field is a dotted path of
// keys (array indices are not recorded), into an *Error.
func typeError(te *json.UnmarshalTypeError, err error) *Error {
	var path []seg
	if te.Field != "" {
		for _, k := range strings.Split(te.Field, ".") {
			path = append(path, seg{key: k, index: -1})
		}
	}
	return newError(path, ErrType, err)
}

// Unmarshal decodes data, which must hold exactly one JSON value, into v
// (a non-nil pointer) after checking every key of every object against the
// type it fills. Nothing is written to v unless the check passes; a type
// error found while filling v may leave it partly filled, so callers must
// discard v on error.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictjson: Unmarshal needs a non-nil pointer, got %T", v)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := check(dec, rv.Type().Elem(), nil); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return newError(nil, ErrTrailing, nil)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return typeError(te, err)
		}
		return newError(nil, ErrSyntax, err)
	}
	return nil
}

// Decode reads all of r, at most limit bytes, and Unmarshals it. A body
// longer than limit is refused without being read further.
func Decode(r io.Reader, limit int64, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return fmt.Errorf("strictjson: read: %w", err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("strictjson: %w", ErrTooLarge)
	}
	return Unmarshal(data, v)
}

// ErrTooLarge refuses a body over Decode's limit.
var ErrTooLarge = errors.New("body too large")

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// opaque reports whether t decodes itself: its keys are its own business,
// but duplicates inside are still refused (checked generically).
func opaque(t reflect.Type) bool {
	if t.Kind() == reflect.Interface {
		return true
	}
	return t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(textUnmarshaler)
}

// check walks one value of the token stream alongside t (nil: any shape).
// The depth is len(path).
func check(dec *json.Decoder, t reflect.Type, path []seg) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && opaque(t) {
		t = nil
	}
	tok, err := dec.Token()
	if err != nil {
		return newError(path, ErrSyntax, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: its type is encoding/json's to check
	}
	if len(path) >= MaxDepth {
		return newError(path, ErrDepth, nil)
	}
	// Each level appends to its own copy, so an error's path is not
	// overwritten by a sibling.
	path = path[:len(path):len(path)]
	switch d {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		strict := false
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields, strict = fieldsOf(t), true
			case reflect.Map:
				elem = t.Elem()
			default:
				return newError(path, ErrType, fmt.Errorf("object for %v", t))
			}
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return newError(path, ErrSyntax, err)
			}
			key, _ := kt.(string)
			p := append(path, seg{key: key, index: -1})
			if seen[key] {
				return newError(p, ErrDuplicate, nil)
			}
			seen[key] = true
			vt := elem
			if strict {
				ft, ok := fields[key]
				if !ok {
					return newError(p, ErrUnknown, nil)
				}
				vt = ft
			}
			if err := check(dec, vt, p); err != nil {
				return err
			}
		}
	case '[':
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Slice, reflect.Array:
				elem = t.Elem()
			default:
				return newError(path, ErrType, fmt.Errorf("array for %v", t))
			}
		}
		for i := 0; dec.More(); i++ {
			if err := check(dec, elem, append(path, seg{index: i})); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return newError(path, ErrSyntax, err)
	}
	return nil
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps the exact JSON names of t's fields to their types, with
// embedded structs' fields promoted the way encoding/json promotes them
// (shallower wins; a name at one depth twice is dropped, as json drops it).
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	type level struct {
		t     reflect.Type
		depth int
	}
	depthOf := map[string]int{}
	ambiguous := map[string]bool{}
	queue := []level{{t, 0}}
	visited := map[reflect.Type]bool{}
	for len(queue) > 0 {
		l := queue[0]
		queue = queue[1:]
		if visited[l.t] {
			continue
		}
		visited[l.t] = true
		for i := 0; i < l.t.NumField(); i++ {
			f := l.t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			ft := f.Type
			if f.Anonymous && name == "" {
				et := ft
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					queue = append(queue, level{et, l.depth + 1})
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if d, ok := depthOf[name]; ok {
				if d == l.depth {
					ambiguous[name] = true
				}
				continue
			}
			depthOf[name] = l.depth
			out[name] = ft
		}
	}
	for name := range ambiguous {
		delete(out, name)
	}
	fieldCache.Store(t, out)
	return out
}
