package phonehome_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome/pgtest"
)

// pg is the PostgreSQL server the postgres backend's tests share; each
// test gets its own database on it.
var pg pgtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	pg.Stop()
	os.Exit(code)
}

// backend is one Store implementation the suite runs against. newDB makes
// an empty database and returns what -db would name it; replicas says
// whether several stores may open it at once.
type backend struct {
	name     string
	newDB    func(t *testing.T) string
	replicas bool
}

var backends = []backend{
	{name: "bolt", newDB: func(t *testing.T) string { return "bolt:" + filepath.Join(t.TempDir(), "l.db") }},
	{name: "postgres", newDB: func(t *testing.T) string { return pg.DB(t) }, replicas: true},
}

// forEachBackend runs test once per backend, as subtests.
func forEachBackend(t *testing.T, test func(*testing.T, backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

// openStore opens db (closed when t ends).
func openStore(t testing.TB, db string) phonehome.Store {
	t.Helper()
	st, err := phonehome.OpenStore(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
