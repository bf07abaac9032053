package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// HistoryBucket is where the login history lives (the privacy settings
// report its size and sweep it).
const HistoryBucket = bHistory

// connection records a login step in the connection log.
func (s *Service) connection(c Client, kind, username, method, result string) {
	if s.conns == nil {
		return
	}
	src := ""
	if c.Addr.IsValid() {
		src = netip.AddrPortFrom(c.Addr, c.Port).String()
	}
	res := connlog.OK
	detail := ""
	if result != connlog.OK {
		res, detail = connlog.Failed, result
		if kind == connlog.AdminLogin {
			res = "pending" // the password step passed; the second factor is asked
		}
	}
	s.conns.Record(connlog.Entry{Time: s.clock.Now(), Kind: kind, Source: src, User: username, Method: method, Result: res, Detail: detail})
}

// PurgeHistory deletes the login attempts older than t (the privacy
// retention sweep; each login also drops entries past the policy's days).
func (s *Service) PurgeHistory(t time.Time) (int, error) {
	cutoff := historyKey(t, "")
	return s.deleteHistory(func(k string, _ HistoryEntry) (bool, bool) { return k < cutoff, k >= cutoff })
}

// ForgetHistory deletes every login attempt naming username.
func (s *Service) ForgetHistory(username string) (int, error) {
	return s.deleteHistory(func(_ string, h HistoryEntry) (bool, bool) { return h.Username == username, false })
}

// ForgetHistoryTx deletes every login attempt naming username inside tx
// (a privacy Forget's one transaction across the stores).
func ForgetHistoryTx(tx *store.Tx, username string) (int, error) {
	n, err := deleteHistoryTx(tx, func(_ string, h HistoryEntry) (bool, bool) { return h.Username == username, false })
	if err != nil {
		return 0, fmt.Errorf("auth: delete login history: %w", err)
	}
	return n, nil
}

func (s *Service) deleteHistory(pick func(k string, h HistoryEntry) (del, stop bool)) (int, error) {
	n := 0
	err := s.db.Update(func(tx *store.Tx) error {
		var err error
		n, err = deleteHistoryTx(tx, pick)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("auth: delete login history: %w", err)
	}
	return n, nil
}

func deleteHistoryTx(tx *store.Tx, pick func(k string, h HistoryEntry) (del, stop bool)) (int, error) {
	var keys []string
	err := tx.ForEach(bHistory, func(k string, raw []byte) error {
		var h HistoryEntry
		if err := jsonUnmarshal(raw, &h); err != nil {
			return fmt.Errorf("decode %s: %w", k, err)
		}
		del, stop := pick(k, h)
		if stop {
			return errStop
		}
		if del {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, err
	}
	for _, k := range keys {
		if err := tx.Delete(bHistory, k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// SetHistoryDays stores the login history retention in the policy (the
// privacy settings own the value; the policy keeps it so each login's own
// pruning agrees with the sweep).
func (s *Service) SetHistoryDays(days int) error {
	return s.db.Update(func(tx *store.Tx) error {
		p, err := policyTx(tx)
		if err != nil {
			return err
		}
		p.HistoryDays = days
		if err := p.Validate(); err != nil {
			return err
		}
		return tx.Put(bMeta, "policy", p)
	})
}

// Reauthenticate checks proof for the caller's own account before a
// sensitive change made elsewhere (shortening a retention deletes
// evidence), with the login's throttle and lockout; action names the
// change in the audit entry a failure leaves.
func (s *Service) Reauthenticate(ctx context.Context, actor Principal, c Client, pr Proof, action string) error {
	return s.reauth(ctx, actor, c, pr, action)
}
