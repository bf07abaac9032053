package phonehome_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

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

// TestMigrations: the schema is applied once however often and however
// concurrently replicas start, and a licensed refuses a database a newer
// licensed migrated.
func TestMigrations(t *testing.T) {
	url := pg.DB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			st, err := phonehome.OpenPostgres(ctx, url, slog.New(slog.DiscardHandler))
			if err == nil {
				st.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent start: %v", err)
		}
	}
	st, err := phonehome.OpenPostgres(ctx, url, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.SchemaVersion(ctx)
	if err != nil || v != phonehome.LatestSchema() {
		t.Fatalf("schema version %d (%v), want %d", v, err, phonehome.LatestSchema())
	}
	st.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != phonehome.LatestSchema() {
		t.Fatalf("%d migrations recorded (%v)", n, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, phonehome.LatestSchema()+1); err != nil {
		t.Fatal(err)
	}
	if st, err := phonehome.OpenPostgres(ctx, url, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "newer") {
		if st != nil {
			st.Close()
		}
		t.Fatalf("opened a database from a newer licensed: %v", err)
	}
}

// TestOpenStoreURL: -db picks the backend by its form; an unknown scheme
// is refused without echoing a password.
func TestOpenStoreURL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		db      string
		wantErr string
	}{
		{filepath.Join(dir, "a.db"), ""},
		{"bolt:" + filepath.Join(dir, "b.db"), ""},
		{"bolt:", "empty path"},
		{"mysql://u:secret@h/db", "unknown scheme"},
		{"postgres://u:secret@127.0.0.1:1/db?connect_timeout=1", "connect"},
	} {
		st, err := phonehome.OpenStore(context.Background(), tc.db, slog.New(slog.DiscardHandler))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.db, err)
				continue
			}
			st.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %v, want %q without the password", tc.db, err, tc.wantErr)
		}
	}
}
