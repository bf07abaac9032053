package admin

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite openapi.json from the route table")

// TestOpenAPIUpToDate keeps the committed openapi.json equal to what the
// route table serves; run `go test ./firmware/admin -run OpenAPI -update`
// after changing routes.
func TestOpenAPIUpToDate(t *testing.T) {
	e, a := claimed(t)
	doc := e.srv.openAPIJSON()
	if *update {
		if err := os.WriteFile("openapi.json", doc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile("openapi.json")
	if err != nil || !bytes.Equal(have, doc) {
		t.Fatalf("openapi.json is stale (%v); run go test ./firmware/admin -run OpenAPI -update", err)
	}
	for _, rt := range e.srv.routes {
		if strings.HasPrefix(rt.path, "/api/") && rt.summary == "" {
			t.Errorf("%s %s has no summary", rt.method, rt.path)
		}
	}
	if r := a.must(200, "GET", "/api/v1/openapi.json", nil); !bytes.Equal(r.body, doc) {
		t.Error("served document differs")
	}
}
