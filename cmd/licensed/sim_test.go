package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"crypto/rand"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome/pgtest"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkFleetDay simulates a fleet's day of check-ins against real
// licensed processes: b.N boxes (run it with -benchtime=100000x), each
// with its own licence, install id and hardware, check in through the real
// client code (firmware/license: TLS with resumption, request, signature
// check) as fast as simTasks concurrent boxes allow, which compresses the
// day. The first round is every box's first check-in (full handshake);
// the timed round is the next day's (resumed), a third day measures the
// database's steady growth. Each round round-robins over the replicas. Figures: check-ins per second of one core of licensed (its own
// CPU time, and PostgreSQL's apart), client-side latency p50/p99, bytes on
// the wire per check-in, and database growth per day scaled to 100,000
// boxes for a year.
//
//	CI=true go test ./cmd/licensed -run '^$' -bench FleetDay -benchtime=10000x
func BenchmarkFleetDay(b *testing.B) {
	for _, tc := range []struct {
		name     string
		postgres bool
		replicas int
	}{
		{"bolt-1", false, 1},
		{"postgres-1", true, 1},
		{"postgres-2", true, 2},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if b.N == 1 {
				return // the framework's probe run; the fleet needs -benchtime=Nx
			}
			simDay(b, tc.postgres, tc.replicas)
		})
	}
}

// simTasks is how many boxes check in at once; each task reuses one box
// store (firmware/store) for the boxes it serves, so 100,000 boxes do not
// need 100,000 files. A box's persisted counter then only grows, and
// anchor hashes depend on the sequence number alone: no false flags.
const simTasks = 32

func simDay(b *testing.B, postgres bool, nReplicas int) {
	f := newFleet(b)
	ctx := context.Background()
	db := "bolt:" + filepath.Join(b.TempDir(), "licensed.db")
	var cluster *pgtest.Cluster
	if postgres {
		var err error
		// Durable: fsync on, as in production.
		if cluster, err = pgtest.Start(ctx, pgtest.Options{Durable: true}); err != nil {
			if os.Getenv("CI") == "" {
				b.Skip(err)
			}
			b.Fatal(err)
		}
		b.Cleanup(cluster.Stop)
		if db, err = cluster.CreateDB(ctx, "fleet"); err != nil {
			b.Fatal(err)
		}
	}
	// Issue every licence in one transaction before serving.
	st, err := phonehome.OpenStore(ctx, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	valid := time.Now().AddDate(1, 0, 0)
	err = st.Update(ctx, "", func(tx phonehome.Tx) error {
		for i := range b.N {
			v, _ := json.Marshal(phonehome.Licence{ID: simID("S", i), ValidUntil: valid, MaxExtensions: 50, MaxTrunks: 4})
			if err := tx.Put(phonehome.Table("licences"), "", simID("S", i), v); err != nil {
				return err
			}
		}
		return nil
	})
	st.Close()
	if err != nil {
		b.Fatal(err)
	}
	var reps []*replica
	for range nReplicas {
		reps = append(reps, f.serve(db))
	}
	size := func() int64 {
		if !postgres {
			// bbolt grows its file ahead of need: count the pages in
			// use, which needs the file, which the replica locks. Stop
			// it, measure, start it again (its TLS sessions go: the
			// round after this one is not timed).
			r := reps[0]
			r.cmd.Process.Signal(syscall.SIGTERM)
			<-r.done
			bdb, err := bolt.Open(strings.TrimPrefix(db, "bolt:"), 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			var used int64
			bdb.View(func(tx *bolt.Tx) error { used = tx.Size() - int64(bdb.Stats().FreeAlloc); return nil })
			bdb.Close()
			reps[0] = f.serve(db)
			return used
		}
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close(ctx)
		var n int64
		conn.Exec(ctx, "CHECKPOINT")
		if err := conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	cpu := func() (lic, pgCPU time.Duration) {
		for _, r := range reps {
			lic += procCPU(r.cmd.Process.Pid)
		}
		if cluster != nil {
			pgCPU = treeCPU(cluster.PID())
		}
		return lic, pgCPU
	}

	// Each task keeps one box store and a byte counter.
	type task struct {
		db      *store.DB
		in, out atomic.Int64
	}
	tasks := make([]*task, simTasks)
	for i := range tasks {
		key := make([]byte, 32)
		rand.Read(key)
		sdb, err := store.Open(filepath.Join(b.TempDir(), "box.db"), key)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sdb.Close() })
		tasks[i] = &task{db: sdb}
	}
	round := func(day uint64) (lat []time.Duration, bytes int64, failed int64) {
		next := make(chan int)
		go func() {
			for i := range b.N {
				next <- i
			}
			close(next)
		}()
		var mu sync.Mutex
		var wg sync.WaitGroup
		var nFail atomic.Int64
		for _, tk := range tasks {
			wg.Go(func() {
				var mine []time.Duration
				for i := range next {
					addr := reps[i%len(reps)].addr
					dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
						c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
						if err != nil {
							return nil, err
						}
						return &countedConn{Conn: c, in: &tk.in, out: &tk.out}, nil
					}
					m, err := license.New(license.Config{ServerURL: "https://127.0.0.1", DB: tk.db, VendorKey: f.pub, RootCAs: f.roots,
						DialContext: dial, Timeout: 60 * time.Second,
						Identity: license.Identity{Serial: simID("EPX", i), InstallID: simID("I", i), Fingerprint: license.Fingerprint(simID("H", i)),
							Firmware: "1.0.0", LicenceID: simID("S", i)},
						AuditHead: func() (license.Anchor, error) { return anchorAt(day), nil },
						AuditAt:   func(seq uint64) (license.Anchor, bool, error) { return anchorAt(seq), seq <= day, nil },
						Logger:    slog.New(slog.DiscardHandler)})
					if err != nil {
						b.Error(err)
						return
					}
					t0 := time.Now()
					if _, err := m.CheckNow(context.Background()); err != nil {
						nFail.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		for _, tk := range tasks {
			bytes += tk.in.Swap(0) + tk.out.Swap(0)
		}
		return lat, bytes, nFail.Load()
	}

	if _, _, failed := round(1); failed > 0 {
		b.Fatalf("%d first check-ins failed", failed)
	}
	lic0, pg0 := cpu()
	b.ResetTimer()
	t0 := time.Now()
	lat, bytes, failed := round(2)
	wall := time.Since(t0)
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d daily check-ins failed", failed)
	}
	lic1, pg1 := cpu()
	// Growth per day in steady state: after day 2 the space its updates
	// left dead is made reusable (autovacuum's job in production; bbolt
	// reuses freed pages itself), then day 3 adds what a day adds.
	if postgres {
		conn, err := pgx.Connect(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "VACUUM"); err != nil {
			b.Fatal(err)
		}
		conn.Close(ctx)
	}
	size1 := size()
	if _, _, failed := round(3); failed > 0 {
		b.Fatalf("%d check-ins of day 3 failed", failed)
	}
	size2 := size()
	slices.Sort(lat)
	n := float64(b.N)
	licCPU := (lic1 - lic0).Seconds() / n
	b.ReportMetric(n/wall.Seconds(), "checkins/s")
	b.ReportMetric(1/licCPU, "checkins/s/licensed-core")
	if pg1 > pg0 {
		b.ReportMetric(1/((pg1-pg0).Seconds()/n), "checkins/s/postgres-core")
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(bytes)/n, "wire-bytes/op")
	// One day's growth per box, for 100,000 boxes over 365 days.
	b.ReportMetric(float64(size2-size1)/n*100000*365/1e9, "GB/100k-box-year")
	b.ReportMetric(float64(size2)/1e6, "db-MB")
	b.ReportMetric(licCPU*100000/60, "licensed-core-min/100k-day")
}

func simID(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }

// procCPU is a process's user+system CPU time (Linux /proc, 100 ticks/s).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// treeCPU is procCPU of pid and its children (PostgreSQL's backends).
func treeCPU(pid int) time.Duration {
	total := procCPU(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			total += procCPU(child)
		}
	}
	return total
}
