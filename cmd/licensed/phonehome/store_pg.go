package phonehome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the PostgreSQL schema, one step per version, applied in
// order at start. Never edit a released step: add the next one.
var migrations = []string{
	// 1: the records bbolt keeps, one table each; documents as jsonb so
	// operators (and the fleet view) can query them.
	`CREATE TABLE licences (id text PRIMARY KEY, doc jsonb NOT NULL);
	 CREATE TABLE advisories (id text PRIMARY KEY, doc jsonb NOT NULL);
	 CREATE TABLE anchors (licence text NOT NULL, install text NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (licence, install));
	 CREATE TABLE seqs (licence text NOT NULL, box text NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (licence, box));
	 CREATE TABLE checkins (id bigserial PRIMARY KEY, licence text NOT NULL, doc jsonb NOT NULL);
	 CREATE INDEX checkins_licence ON checkins (licence, id);`,
	// 2: TLS sessions behind session tickets, shared so a ticket from one
	// replica resumes on another. UNLOGGED: no WAL per handshake; a crash
	// loses them, which costs each box one full handshake.
	`CREATE UNLOGGED TABLE tls_sessions (id bytea PRIMARY KEY, created timestamptz NOT NULL, state bytea NOT NULL);
	 CREATE INDEX tls_sessions_created ON tls_sessions (created);`,
	// 3: one summary per box for the fleet view, kept by each check-in.
	`CREATE TABLE boxes (licence text NOT NULL, box text NOT NULL, doc jsonb NOT NULL, PRIMARY KEY (licence, box));`,
}

// LatestSchema is the PostgreSQL schema version this licensed migrates to.
func LatestSchema() int { return len(migrations) }

// migrateLock is the advisory lock replicas starting together take so
// that one applies the migrations and the others wait.
const migrateLock = 0x6c6963656e736564 // "licensed"

// pgTables maps a Table to its table and key columns.
var pgTables = map[Table]struct{ name, k1, k2 string }{
	tLicences:   {"licences", "", "id"},
	tAdvisories: {"advisories", "", "id"},
	tAnchors:    {"anchors", "licence", "install"},
	tSeqs:       {"seqs", "licence", "box"},
	tCheckins:   {"checkins", "licence", "id"},
	tBoxes:      {"boxes", "licence", "box"},
}

// PGStore keeps licensed's state in PostgreSQL, shared by replicas.
type PGStore struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// puts counts session puts: every sessionSweep-th one removes expired
	// sessions.
	puts atomic.Uint64
}

// OpenPostgres connects and applies the migrations this licensed knows;
// it refuses a database migrated by a newer licensed.
func OpenPostgres(ctx context.Context, url string, log *slog.Logger) (*PGStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("licensed: -db %s: %w", redactURL(url), err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		// pgxpool's default (4 on a small machine) queues concurrent
		// check-ins behind each other; a replica's share of
		// PostgreSQL's max_connections (100) is the better default.
		cfg.MaxConns = defaultPoolConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("licensed: connect: %w", err)
	}
	s := &PGStore{pool: pool, log: log}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// SchemaVersion is the newest migration applied to the database.
func (s *PGStore) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func (s *PGStore) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("licensed: connect: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrateLock)); err != nil {
		return fmt.Errorf("licensed: migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrateLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("licensed: schema_migrations: %w", err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("licensed: schema version: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("licensed: database schema version %d is newer than this licensed knows (%d): update licensed", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("licensed: migration %d: %w", v, err)
		}
		s.log.Info("licensed: schema migrated", "version", v)
	}
	return nil
}

// defaultPoolConns is a replica's connection pool size unless the URL
// sets pool_max_conns.
const defaultPoolConns = 16

// maxTxTries bounds retries of a transaction the database aborted as a
// deadlock or serialization failure.
const maxTxTries = 5

// Update takes a transaction-scoped advisory lock on lock first: every
// replica's transactions about one licence run one after the other, and
// under READ COMMITTED each statement after the lock sees what the
// previous holder committed.
func (s *PGStore) Update(ctx context.Context, lock string, fn func(Tx) error) error {
	var err, fnErr error
	for range maxTxTries {
		fnErr = nil
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, lock); err != nil {
				return err
			}
			fnErr = fn(pgTx{ctx: ctx, tx: tx})
			return fnErr
		})
		if !retryable(err) {
			break
		}
	}
	if err != nil && err == fnErr {
		return err // pgTx marked its own errors
	}
	return pgErr(err)
}

func (s *PGStore) View(ctx context.Context, fn func(Tx) error) error {
	var fnErr error
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		fnErr = fn(pgTx{ctx: ctx, tx: tx})
		return fnErr
	})
	if err != nil && err == fnErr {
		return err
	}
	return pgErr(err)
}

func (s *PGStore) Sessions() SessionStore { return (*pgSessions)(s) }

func (s *PGStore) Close() error {
	s.pool.Close()
	return nil
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// pgErr marks the failures that say the database is away, not that a
// request was wrong: licensed answers those with "try later". An error
// the server sent is a real failure unless its class says connection (08),
// resources (53), operator intervention (57: shutting down) or system
// (58); anything else from the driver (refused, reset, EOF, timeout) is
// the database out of reach.
func pgErr(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "58":
		default:
			return err
		}
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

type pgTx struct {
	ctx context.Context
	tx  pgx.Tx
}

func (p pgTx) Get(t Table, k1, k2 string) ([]byte, error) {
	m := pgTables[t]
	q, args := `SELECT doc::text FROM `+m.name+` WHERE `+m.k2+` = $1`, []any{k2}
	if m.k1 != "" {
		q, args = q+` AND `+m.k1+` = $2`, append(args, k1)
	}
	var doc string
	err := p.tx.QueryRow(p.ctx, q, args...).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, pgErr(fmt.Errorf("%s %s/%s: %w", t, k1, k2, err))
	}
	return []byte(doc), nil
}

func (p pgTx) Put(t Table, k1, k2 string, v []byte) error {
	if k2 == "" {
		return errors.New("licensed: empty key")
	}
	m := pgTables[t]
	var err error
	if m.k1 == "" {
		_, err = p.tx.Exec(p.ctx, `INSERT INTO `+m.name+` (`+m.k2+`, doc) VALUES ($1, $2::jsonb)
			ON CONFLICT (`+m.k2+`) DO UPDATE SET doc = EXCLUDED.doc`, k2, string(v))
	} else {
		_, err = p.tx.Exec(p.ctx, `INSERT INTO `+m.name+` (`+m.k1+`, `+m.k2+`, doc) VALUES ($1, $2, $3::jsonb)
			ON CONFLICT (`+m.k1+`, `+m.k2+`) DO UPDATE SET doc = EXCLUDED.doc`, k1, k2, string(v))
	}
	if err != nil {
		return pgErr(fmt.Errorf("%s %s/%s: %w", t, k1, k2, err))
	}
	return nil
}

func (p pgTx) Delete(t Table, k1, k2 string) error {
	m := pgTables[t]
	q, args := `DELETE FROM `+m.name+` WHERE `+m.k2+` = $1`, []any{k2}
	if m.k1 != "" {
		q, args = q+` AND `+m.k1+` = $2`, append(args, k1)
	}
	if _, err := p.tx.Exec(p.ctx, q, args...); err != nil {
		return pgErr(fmt.Errorf("%s %s/%s: %w", t, k1, k2, err))
	}
	return nil
}

func (p pgTx) List(t Table, k1 string, fn func(string, []byte) error) error {
	m := pgTables[t]
	q, args := `SELECT `+m.k2+`::text, doc::text FROM `+m.name, []any(nil)
	if m.k1 != "" {
		q, args = q+` WHERE `+m.k1+` = $1`, append(args, k1)
	}
	rows, err := p.tx.Query(p.ctx, q+` ORDER BY `+m.k2, args...)
	if err != nil {
		return pgErr(fmt.Errorf("%s %s: %w", t, k1, err))
	}
	type rec struct{ k, v string }
	var recs []rec
	for rows.Next() {
		var r rec
		if err := rows.Scan(&r.k, &r.v); err != nil {
			rows.Close()
			return pgErr(err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return pgErr(fmt.Errorf("%s %s: %w", t, k1, err))
	}
	// fn runs after the rows are read: it may query the same transaction.
	for _, r := range recs {
		if err := fn(r.k, []byte(r.v)); err != nil {
			return err
		}
	}
	return nil
}

func (p pgTx) Scan(t Table, fn func(k1, k2 string, v []byte) error) error {
	m := pgTables[t]
	k1 := "''"
	if m.k1 != "" {
		k1 = m.k1
	}
	rows, err := p.tx.Query(p.ctx, `SELECT `+k1+`, `+m.k2+`::text, doc::text FROM `+m.name+` ORDER BY 1, 2`)
	if err != nil {
		return pgErr(fmt.Errorf("%s: %w", t, err))
	}
	defer rows.Close()
	for rows.Next() {
		var a, b, v string
		if err := rows.Scan(&a, &b, &v); err != nil {
			return pgErr(err)
		}
		if err := fn(a, b, []byte(v)); err != nil {
			return err
		}
	}
	return pgErr(rows.Err())
}

func (p pgTx) Count(t Table, k1 string) (int, error) {
	m := pgTables[t]
	q, args := `SELECT count(*) FROM `+m.name, []any(nil)
	if m.k1 != "" {
		q, args = q+` WHERE `+m.k1+` = $1`, append(args, k1)
	}
	var n int
	if err := p.tx.QueryRow(p.ctx, q, args...).Scan(&n); err != nil {
		return 0, pgErr(fmt.Errorf("%s %s: %w", t, k1, err))
	}
	return n, nil
}

func (p pgTx) Append(t Table, k1 string, v []byte) error {
	m := pgTables[t]
	if _, err := p.tx.Exec(p.ctx, `INSERT INTO `+m.name+` (`+m.k1+`, doc) VALUES ($1, $2::jsonb)`, k1, string(v)); err != nil {
		return pgErr(fmt.Errorf("%s %s: %w", t, k1, err))
	}
	return nil
}

// pgSessions is the shared TLS session store.
type pgSessions PGStore

const (
	sessionSweep   = 1024
	maxPGSessions  = 4 << 20 // a few hundred bytes each: about 1 GB at most
	sessionTimeout = 2 * time.Second
)

func (p *pgSessions) Put(ctx context.Context, id []byte, created time.Time, state []byte) error {
	if _, err := p.pool.Exec(ctx, `INSERT INTO tls_sessions (id, created, state) VALUES ($1, $2, $3)`, id, created, state); err != nil {
		return pgErr(err)
	}
	if p.puts.Add(1)%sessionSweep == 0 {
		// Expired ones, then the oldest beyond the bound (a flood of full
		// handshakes must not grow the table without end).
		_, err := p.pool.Exec(ctx, `DELETE FROM tls_sessions WHERE created < $1`, created.Add(-sessionLife))
		if err == nil {
			_, err = p.pool.Exec(ctx, `DELETE FROM tls_sessions WHERE id IN (SELECT id FROM tls_sessions ORDER BY created DESC OFFSET $1)`, maxPGSessions)
		}
		if err != nil {
			p.log.Warn("licensed: expire TLS sessions", "err", err)
		}
	}
	return nil
}

func (p *pgSessions) Take(ctx context.Context, id []byte, notBefore time.Time) ([]byte, bool, error) {
	var state []byte
	var created time.Time
	err := p.pool.QueryRow(ctx, `DELETE FROM tls_sessions WHERE id = $1 RETURNING created, state`, id).Scan(&created, &state)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, pgErr(err)
	}
	return state, !created.Before(notBefore), nil
}
