package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// backupResealers are the buckets holding sealed values, each with its
// owner's function to move them between device keys.
func backupResealers() map[string]store.Resealer {
	return map[string]store.Resealer{
		auth.AccountsBucket:       auth.ResealAccount,
		sipedge.ExtensionsBucket:  sipedge.ResealExtension,
		sipedge.TrunksBucket:      sipedge.ResealTrunk,
		pbxconfig.TelephonyBucket: pbxconfig.ResealTelephony,
		certs.Bucket:              certs.ResealCertificate,
		certs.ACMEBucket:          certs.ResealACME,
		provision.SecretsBucket:   provision.ResealSecrets,
		audit.MetaBucket:          audit.ResealMeta,
		privacy.KeysBucket:        privacy.ResealKeys,
		mailer.Bucket:             mailer.ResealSettings,
	}
}

// newBackup builds the backup service; the admin side works without it
// (its API answers 409), so a failure is logged, not fatal.
func (d *daemon) newBackup() {
	var media *recording.Store
	if d.media != nil {
		media = d.media.recordings // nil: backups with media are refused with the reason
	}
	var music backup.Music
	if d.moh != nil {
		music = d.moh // uploaded music-on-hold classes: in every backup
	}
	b, err := backup.New(backup.Config{DB: d.db, Audit: d.audit, Media: media, Music: music,
		Box: backup.Identity{Serial: d.id.Serial, InstallID: d.id.InstallID, Firmware: version},
		Dir: filepath.Join(d.cfg.dataDir, "backups"), Resealers: backupResealers(),
		BoxLocal: backup.DefaultBoxLocal(certs.Bucket, certs.BoxLocalKeys()), Log: d.log})
	if err != nil {
		d.log.Error("backup: disabled", "err", err)
		return
	}
	d.backup = b
}

// runBackup makes the scheduled backups; after a restore it ends with an
// error so edgepbxd exits and PID 1 starts it again on the restored store.
func (d *daemon) runBackup(ctx context.Context) error {
	if d.backup == nil {
		<-ctx.Done()
		return nil
	}
	return d.backup.Run(ctx, 10*time.Minute)
}

// restoredFrom is what the licence check-in reports: the serial of another
// box whose backup was restored here (d.backup is built after the licence
// manager, and read only at check-in time).
func (d *daemon) restoredFrom() string {
	if d.backup == nil {
		return ""
	}
	r, ok, err := d.backup.LastRestore()
	if err != nil {
		d.log.Warn("backup: last restore not reported to the licence server", "err", err)
		return ""
	}
	if !ok || !r.OtherBox {
		return ""
	}
	return r.FromSerial
}
