package strictjson

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Name     string         `json:"name"`
	Prefixes []netip.Prefix `json:"prefixes"`
}

type Embedded struct {
	Tag string `json:"tag"`
}

type target struct {
	Embedded
	Remote    netip.Addr        `json:"remote"`
	LocalPort uint16            `json:"local_port"`
	Timeout   time.Duration     `json:"timeout"`
	Zones     []inner           `json:"zones"`
	Labels    map[string]string `json:"labels"`
	Raw       json.RawMessage   `json:"raw"`
	Ptr       *inner            `json:"ptr"`
	Skipped   string            `json:"-"`
	hidden    string
}

func TestUnmarshal(t *testing.T) {
	for _, c := range []struct {
		in      string
		kind    error // nil: accepted
		field   string
		pointer string
	}{
		{`{"remote":"1::","local_port":2000}`, nil, "", ""},
		{`{"tag":"x","zones":[{"name":"a","prefixes":["10.0.0.0/8"]}],"labels":{"A":"b"},"raw":{"any":1},"ptr":null}`, nil, "", ""},
		{` {"remote":"1::"} ` + "\n", nil, "", ""},
		{`{"remote":"1::","loCAl_port":2000}`, ErrUnknown, "loCAl_port", "/loCAl_port"},
		{`{"Remote":"1::"}`, ErrUnknown, "Remote", "/Remote"},
		{`{"LocalPort":1}`, ErrUnknown, "LocalPort", "/LocalPort"},
		{`{"Skipped":"x"}`, ErrUnknown, "Skipped", "/Skipped"},
		{`{"-":"x"}`, ErrUnknown, "-", "/-"},
		{`{"hidden":"x"}`, ErrUnknown, "hidden", "/hidden"},
		{`{"Embedded":{"tag":"x"}}`, ErrUnknown, "Embedded", "/Embedded"},
		{`{"local_port":1,"local_port":2}`, ErrDuplicate, "local_port", "/local_port"},
		{`{"labels":{"a":"1","a":"2"}}`, ErrDuplicate, "labels.a", "/labels/a"},
		{`{"raw":{"k":1,"k":2}}`, ErrDuplicate, "raw.k", "/raw/k"},
		{`{"labels":{"a/b~":"1","a/b~":"2"}}`, ErrDuplicate, "labels.a/b~", "/labels/a~1b~0"},
		{`{"zones":[{"name":"a"},{"name":"b","NAME":"c"}]}`, ErrUnknown, "zones[1].NAME", "/zones/1/NAME"},
		{`{"ptr":{"Name":"x"}}`, ErrUnknown, "ptr.Name", "/ptr/Name"},
		{`{"remote":"1::"} {}`, ErrTrailing, "", ""},
		{`{"remote":"1::"}x`, ErrTrailing, "", ""},
		{`{"remote":"1::"}]`, ErrTrailing, "", ""},
		{``, ErrSyntax, "", ""},
		{`{"remote":`, ErrSyntax, "remote", "/remote"},
		{`{"local_port":"80"}`, ErrType, "local_port", "/local_port"},
		{`{"local_port":70000}`, ErrType, "local_port", "/local_port"},
		{`{"zones":{"name":"a"}}`, ErrType, "zones", "/zones"},
		{`[]`, ErrType, "", ""},
		{`{"raw":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`, ErrDepth, "raw" + strings.Repeat("[0]", MaxDepth-1), "/raw" + strings.Repeat("/0", MaxDepth-1)},
	} {
		var v target
		err := Unmarshal([]byte(c.in), &v)
		if c.kind == nil {
			if err != nil {
				t.Errorf("Unmarshal(%s) = %v, want nil", c.in, err)
			}
			continue
		}
		var se *Error
		if !errors.As(err, &se) || !errors.Is(err, c.kind) || se.Field != c.field {
			t.Errorf("Unmarshal(%s) = %v, want %v at %q", c.in, err, c.kind, c.field)
		}
		if se != nil && se.Pointer != c.pointer {
			t.Errorf("Unmarshal(%s): pointer %q, want %q", c.in, se.Pointer, c.pointer)
		}
	}
}

func TestUnmarshalWritesNothingOnRefusal(t *testing.T) {
	v := target{LocalPort: 7}
	if err := Unmarshal([]byte(`{"local_port":1,"local_port":2}`), &v); err == nil || v.LocalPort != 7 {
		t.Fatalf("refused body changed the value: %v, %+v", err, v)
	}
}

func TestDecodeLimit(t *testing.T) {
	var v target
	if err := Decode(strings.NewReader(`{"tag":"`+strings.Repeat("x", 100)+`"}`), 64, &v); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decode over the limit = %v, want ErrTooLarge", err)
	}
	if err := Decode(strings.NewReader(`{"tag":"x"}`), 64, &v); err != nil || v.Tag != "x" {
		t.Fatalf("Decode = %v, %+v", err, v)
	}
}

// keys collects every object key path of a decoded JSON value.
func keys(v any, path string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := path + "." + k
			out[p] = true
			keys(e, p, out)
		}
	case []any:
		for _, e := range x {
			keys(e, path+"[]", out)
		}
	}
}

type fuzzTarget struct {
	Remote    netip.Addr `json:"remote"`
	LocalPort uint16     `json:"local_port"`
	Zones     []inner    `json:"zones"`
	Flag      bool       `json:"flag"`
}

// FuzzUnmarshal: whatever strictjson accepts, encoding/json decodes the
// same way, it names only exact fields, and it round-trips.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"remote":"1::","local_port":2000}`))
	f.Add([]byte(`{"remote":"1::","loCAl_port":2000}`))
	f.Add([]byte(`{"zones":[{"name":"a","prefixes":["10.0.0.0/8"]}],"flag":true}`))
	f.Add([]byte(`{"flag":true,"flag":false}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v fuzzTarget
		if err := Unmarshal(data, &v); err != nil {
			return
		}
		var std fuzzTarget
		if err := json.Unmarshal(data, &std); err != nil || !reflect.DeepEqual(v, std) {
			t.Fatalf("encoding/json disagrees: %v, %+v vs %+v", err, std, v)
		}
		var generic any
		if err := json.Unmarshal(data, &generic); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		keys(generic, "", got)
		allowed := map[string]bool{".remote": true, ".local_port": true, ".zones": true, ".flag": true,
			".zones[].name": true, ".zones[].prefixes": true}
		for k := range got {
			if !allowed[k] {
				t.Fatalf("accepted key %q", k)
			}
		}
		out, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var again fuzzTarget
		if err := Unmarshal(out, &again); err != nil || !reflect.DeepEqual(v, again) {
			t.Fatalf("round trip: %v, %+v vs %+v", err, again, v)
		}
	})
}
