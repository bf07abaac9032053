package license

import (
	"context"
	"fmt"
	"time"
)

// Floors are values that only move forward and live outside /data: PID 1
// keeps them in the TPM's NV where the board has one (init/keys), so a
// restored older /data cannot hand the box a fresh grace period or replay
// an old check-in sequence. PID 1 refuses a lower value itself.
type Floors interface {
	Get(ctx context.Context) (map[string]uint64, error)
	Raise(ctx context.Context, name string, v uint64) error
}

// Floor names (init/control.FloorNames lists them: PID 1 keeps no others).
// The newest signed server time is deliberately not a floor: nothing but a
// good check-in could vouch for it, and a compromised edgepbxd raising it
// into the far future would expire the licence for good (no reset lowers a
// TPM floor). The three below are healed by a good check-in (good := run;
// the server adopts a higher sequence).
const (
	FloorRun     = "license.run"  // seconds ever counted by the offline counter
	FloorGoodRun = "license.good" // license.run at the last good check-in
	FloorSeq     = "license.seq"  // check-in sequence number
)

// maxFloorSeq bounds a sequence floor taken from PID 1: no box checks in
// 2^32 times; a larger value is a forged floor, ignored.
const maxFloorSeq = 1 << 32

// floorRunEvery is how far the counted offline time may run ahead of its
// floor: at most this much grace is won back by restoring an old /data, and
// the NV sees about one write an hour (TPM NV endures ~10^5 writes).
const floorRunEvery = time.Hour

const floorTimeout = 5 * time.Second

// applyFloors lifts the loaded state to the floors: after a restore of an
// older /data the counters continue from where the box really was. A run
// floor is clamped (secs) so a forged one cannot overflow the counter.
func (m *Manager) applyFloors() error {
	if m.cfg.Floors == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), floorTimeout)
	defer cancel()
	f, err := m.cfg.Floors.Get(ctx)
	if err != nil {
		return fmt.Errorf("license: floors: %w", err)
	}
	m.floorsMu.Lock()
	m.raised = f
	m.floorsMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	before := m.st.Elapsed
	if run := secs(f[FloorRun]); run > m.st.Run {
		m.st.Run = run
	}
	if good := secs(f[FloorGoodRun]); good > m.st.GoodRun {
		m.st.GoodRun = good
	}
	if d := m.st.Run - m.st.GoodRun; d > m.st.Elapsed {
		m.st.Elapsed = d
	}
	if s := f[FloorSeq]; s > m.st.Seq && s < maxFloorSeq {
		m.st.Seq = s
	}
	if m.st.Elapsed > before {
		m.log.Warn("licence state behind its floors (an older /data restored?); offline time continues from the floors",
			"stored", before, "floors", m.st.Elapsed)
	}
	return nil
}

func secs(v uint64) time.Duration {
	return time.Duration(min(v, uint64(1<<33))) * time.Second
}

// raiseFloors moves the floors up to the state: the sequence number always
// (it must be there before a request leaves), the offline counter when it
// ran floorRunEvery ahead, everything after a good check-in (good). A
// failed raise is logged and retried next time: the PBX does not stop
// over its licence.
func (m *Manager) raiseFloors(ctx context.Context, good bool) {
	if m.cfg.Floors == nil {
		return
	}
	m.mu.Lock()
	want := map[string]uint64{FloorSeq: m.st.Seq}
	run := uint64(m.st.Run / time.Second)
	if good {
		want[FloorRun] = run
		want[FloorGoodRun] = uint64(m.st.GoodRun / time.Second)
	}
	m.mu.Unlock()
	m.floorsMu.Lock()
	defer m.floorsMu.Unlock()
	if m.raised == nil {
		m.raised = map[string]uint64{}
	}
	if run >= m.raised[FloorRun]+uint64(floorRunEvery/time.Second) {
		want[FloorRun] = run
	}
	ctx, cancel := context.WithTimeout(ctx, floorTimeout)
	defer cancel()
	// Run before good: PID 1 keeps good <= run on every power cut.
	for _, name := range []string{FloorSeq, FloorRun, FloorGoodRun} {
		v, ok := want[name]
		if !ok || v <= m.raised[name] {
			continue
		}
		if err := m.cfg.Floors.Raise(ctx, name, v); err != nil {
			m.log.Warn("licence floor not raised", "floor", name, "value", v, "err", err)
			continue
		}
		m.raised[name] = v
	}
}
