package cdr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// settingsBucket holds the retention setting (key "retention").
const settingsBucket = "cdr.settings"

// MaxRetentionDays bounds the retention setting (ten years).
const MaxRetentionDays = 3650

// purgeBatch bounds the deletions per write transaction, so a first purge
// of a large history does not hold the store's writer for long.
const purgeBatch = 5000

// Retention says how long records are kept. Days 0 keeps them forever.
type Retention struct {
	Days int `json:"days"`
}

// DefaultRetentionDays applies until the admin sets a retention: six
// months, long enough to settle billing disputes and match carrier
// invoices, and the product's promise for files (firmware/privacy).
const DefaultRetentionDays = 180

// ErrRetention is a refused retention setting.
var ErrRetention = errors.New("cdr: retention must be 0 (keep) to 3650 days")

// Retention returns the stored setting.
func (s *Store) Retention() (Retention, error) {
	r := Retention{Days: DefaultRetentionDays}
	err := s.db.View(func(tx *store.Tx) error {
		_, err := tx.Get(settingsBucket, "retention", &r)
		return err
	})
	if err != nil {
		return Retention{}, fmt.Errorf("cdr: read retention: %w", err)
	}
	return r, nil
}

// SetRetention stores the setting; the next ApplyRetention honours it.
func (s *Store) SetRetention(r Retention) error {
	if r.Days < 0 || r.Days > MaxRetentionDays {
		return ErrRetention
	}
	return s.db.Update(func(tx *store.Tx) error { return SetRetentionTx(tx, r) })
}

// SetRetentionTx stores the setting inside the caller's transaction (with
// the audit entry of the change).
func SetRetentionTx(tx *store.Tx, r Retention) error {
	if r.Days < 0 || r.Days > MaxRetentionDays {
		return ErrRetention
	}
	return tx.Put(settingsBucket, "retention", r)
}

// Purge deletes the records of calls that started before t and returns
// how many.
func (s *Store) Purge(t time.Time) (int, error) {
	hi := fmt.Sprintf("%016x/", uint64(max(t.UnixNano(), 0)))
	total := 0
	for {
		n := 0
		err := s.db.Update(func(tx *store.Tx) error {
			var keys []string
			err := tx.ForEach(bucket, func(k string, _ []byte) error {
				if k >= hi || len(keys) >= purgeBatch {
					return errStop
				}
				keys = append(keys, k)
				return nil
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
			for _, k := range keys {
				if err := tx.Delete(bucket, k); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("cdr: purge: %w", err)
		}
		total += n
		if n < purgeBatch {
			return total, nil
		}
	}
}

// ApplyRetention purges what the retention setting no longer keeps.
func (s *Store) ApplyRetention(now time.Time) (int, error) {
	r, err := s.Retention()
	if err != nil || r.Days == 0 {
		return 0, err
	}
	return s.Purge(now.AddDate(0, 0, -r.Days))
}

// RunRetention applies the retention setting at start and then every
// interval until ctx ends (edgepbxd runs it as a service).
func (s *Store) RunRetention(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		n, err := s.ApplyRetention(time.Now())
		switch {
		case err != nil:
			log.Error("cdr: retention", "err", err)
		case n > 0:
			log.Info("cdr: retention purged call records", "records", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
	}
}
