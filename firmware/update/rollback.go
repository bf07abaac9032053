package update

import (
	"errors"
	"strings"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// rollbackKey keeps the boot whose rollback is in the audit log: edgepbxd
// may start several times in one boot (restarts), the entry is written once.
const rollbackKey = "rollback-audited"

// RecordRollback writes the audit entry of a failed update that PID 1
// found at this boot (the trial slot crashed, hung, never started or was
// not healthy, and the firmware came back to the old slot): action
// update.rollback, outcome failed, PID 1's reason as the detail. bootID
// names this boot (/proc/sys/kernel/random/boot_id); the entry is written
// once per boot.
func (s *Service) RecordRollback(bootID, reason string) error {
	bootID = strings.TrimSpace(bootID)
	if bootID == "" || len(bootID) > 64 {
		return errors.New("update: record rollback: bad boot id")
	}
	return s.DB.Update(func(tx *store.Tx) error {
		var done string
		if _, err := tx.Get(bucket, rollbackKey, &done); err != nil {
			return err
		}
		if done == bootID {
			return nil
		}
		if err := tx.Put(bucket, rollbackKey, bootID); err != nil {
			return err
		}
		return s.Audit.RecordTx(tx, audit.Event{Actor: "pid1", Action: "update.rollback", Outcome: audit.Failed, Detail: reason})
	})
}
