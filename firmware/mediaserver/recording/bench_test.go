package recording

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// benchLegs is the concurrent recording count the targets are stated for.
const benchLegs = 200

// BenchmarkRecorderFrame measures one 20 ms frame of one recording leg:
// jitter buffer push and pop, decode, concealment bookkeeping, re-encode,
// sealing (AES-256-GCM per 1 s chunk) and the write to a real file, over
// 200 open recordings taken in turn. legs/core = 20 ms / (ns per frame).
func BenchmarkRecorderFrame(b *testing.B) {
	for _, name := range []string{"PCMU", "G722"} {
		b.Run(name, func(b *testing.B) {
			s := newBenchStore(b)
			pkts := rtpStream(b, name, 1000, 500, 0, 0)
			recs := make([]*Recorder, benchLegs)
			for i := range recs {
				var err error
				if recs[i], err = s.NewRecorder("call", RecorderConfig{Tracks: []string{name}}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := range b.N {
				r := recs[i%benchLegs]
				k := i / benchLegs
				p := pkts[k%len(pkts)]
				r.Packet(0, uint16(k), uint32(k*160), false, p.payload)
				if err := r.Tick(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			// CPU time, not wall time: on a shared machine the wall clock
			// also counts the time other processes held the cores.
			perFrame := float64((cpuTime() - cpu0).Nanoseconds()) / float64(b.N)
			b.ReportMetric(perFrame, "cpu-ns/frame")
			b.ReportMetric(float64(20*time.Millisecond)/perFrame, "legs/core")
			var bytes int64
			for _, r := range recs {
				r.Close()
			}
			for _, e := range s.List("") {
				bytes += e.Size
			}
			frames := float64(b.N)
			b.ReportMetric(float64(bytes)/(frames*0.02/60), "disk-bytes/min")
		})
	}
}

func newBenchStore(b *testing.B) *Store {
	b.Helper()
	dir := b.TempDir()
	if d := os.Getenv("EDGEPBX_BENCH_DIR"); d != "" { // e.g. a real disk instead of tmpfs
		dir = filepath.Join(d, fmt.Sprint(time.Now().UnixNano()))
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	s, err := OpenStore(Config{Dir: dir, Keys: testKeys(b), Quota: 1 << 40, MinFree: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkRealtime200 runs 200 recording legs in real time: a sender
// goroutine emits every leg's packet each 20 ms with random network jitter
// of 0-30 ms (so packets arrive reordered), and one worker per core owns
// half of the legs, pushing packets as they arrive and ticking each leg
// every 20 ms. It reports the loss (frames concealed plus packets dropped
// late, over packets sent) and the CPU the process used per leg. Each
// iteration is 10 s of audio; run with -benchtime 3x or more.
func BenchmarkRealtime200(b *testing.B) {
	for _, name := range []string{"PCMU", "G722"} {
		b.Run(name, func(b *testing.B) {
			var sent, lost, late uint64
			var cpu time.Duration
			var wall time.Duration
			for range b.N {
				st, ls, lt, c, w := realtime(b, name, benchLegs, 10*time.Second)
				sent += st
				lost += ls
				late += lt
				cpu += c
				wall += w
			}
			b.ReportMetric(100*float64(lost+late)/float64(sent), "loss-%")
			b.ReportMetric(float64(late), "late-pkts")
			b.ReportMetric(100*cpu.Seconds()/wall.Seconds()/benchLegs, "cpu-%/leg")
			b.ReportMetric(float64(benchLegs)/(cpu.Seconds()/wall.Seconds()), "legs/core")
		})
	}
}

type arrival struct {
	leg int
	p   rtpPacket
}

func realtime(b *testing.B, name string, legs int, dur time.Duration) (sent, lost, late uint64, cpu, wall time.Duration) {
	s := newBenchStore(b)
	pkts := rtpStream(b, name, 1000, 500, 0, 0)
	workers := runtime.GOMAXPROCS(0)
	recs := make([]*Recorder, legs)
	for i := range recs {
		var err error
		if recs[i], err = s.NewRecorder("call", RecorderConfig{Tracks: []string{name}}); err != nil {
			b.Fatal(err)
		}
	}
	inbox := make([]chan arrival, workers)
	for i := range inbox {
		inbox[i] = make(chan arrival, legs*8)
	}
	frames := int(dur / (20 * time.Millisecond))
	start := time.Now()
	cpu0 := cpuTime()
	var wg sync.WaitGroup
	// Network: each packet is due at its send time plus a random delay.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(9, 9))
		type due struct {
			at time.Time
			a  arrival
		}
		var q []due
		for f := 0; f <= frames+3; f++ {
			now := start.Add(time.Duration(f) * 20 * time.Millisecond)
			time.Sleep(time.Until(now))
			if f < frames {
				for leg := range legs {
					p := pkts[f%len(pkts)]
					p.seq, p.ts = uint16(f), uint32(f*160)
					q = append(q, due{now.Add(time.Duration(r.IntN(30)) * time.Millisecond), arrival{leg, p}})
				}
			}
			// Deliver what is due within this 20 ms slot; within a slot,
			// packets go out in random order (that is the jitter).
			n := 0
			for _, d := range q {
				if d.at.Before(now.Add(20 * time.Millisecond)) {
					inbox[d.a.leg%workers] <- d.a
				} else {
					q[n] = d
					n++
				}
			}
			q = q[:n]
		}
		for _, c := range inbox {
			close(c)
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			in := inbox[w]
			for {
				select {
				case a, ok := <-in:
					if !ok {
						return
					}
					recs[a.leg].Packet(0, a.p.seq, a.p.ts, false, a.p.payload)
				case <-tick.C:
					for leg := w; leg < legs; leg += workers {
						if err := recs[leg].Tick(); err != nil {
							b.Error(err)
							return
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	wall = time.Since(start)
	cpu = cpuTime() - cpu0
	for _, r := range recs {
		st := r.Stats()
		lost += st.Lost
		late += st.Late
		r.Close()
	}
	return uint64(legs * frames), lost, late, cpu, wall
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMemoryPerLeg reports the heap one open recording leg holds.
func BenchmarkMemoryPerLeg(b *testing.B) {
	for _, name := range []string{"PCMU", "G722"} {
		b.Run(name, func(b *testing.B) {
			s := newBenchStore(b)
			pkts := rtpStream(b, name, 1000, 10, 0, 0)
			var perLeg float64
			for range b.N {
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				recs := make([]*Recorder, benchLegs)
				for i := range recs {
					recs[i], _ = s.NewRecorder("call", RecorderConfig{Tracks: []string{name}})
					for _, p := range pkts { // warm: buffers at their working size
						recs[i].Packet(0, p.seq, p.ts, false, p.payload)
						recs[i].Tick()
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				perLeg = float64(m1.HeapInuse-m0.HeapInuse) / benchLegs
				for _, r := range recs {
					r.Close()
				}
			}
			b.ReportMetric(perLeg, "heap-bytes/leg")
		})
	}
}
