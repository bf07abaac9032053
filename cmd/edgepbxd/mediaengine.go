package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// mediaEngine is the storage of the box's own media applications:
// recordings and voicemail sealed under the media data key, and the prompt
// library. The applications (firmware/call's endpoint, voicemail, IVR,
// conference) take these from the daemon.
type mediaEngine struct {
	recordings *recording.Store
	prompts    *prompts.Library
}

// recordingSweep is how often expired recordings are deleted.
const recordingSweep = time.Hour

// newMediaEngine opens /data/recordings and /data/prompts (d.media stays
// nil when it fails: the applications that need it are then off). Recordings get
// at most a quarter of the data partition and always leave a tenth of it
// (at least 128 MiB) free, so they never fill /data.
func (d *daemon) newMediaEngine() error {
	keys, own, err := mediaKeys(d.id)
	if err != nil {
		return fmt.Errorf("media: key: %w", err)
	}
	if !own && d.cfg.devDir == "" {
		d.log.Warn("media: no media data key from PID 1; recordings are sealed under a key derived from the device key")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(d.cfg.dataDir, &st); err != nil {
		return fmt.Errorf("media: statfs %s: %w", d.cfg.dataDir, err)
	}
	size := int64(st.Blocks) * int64(st.Bsize)
	rec, err := recording.OpenStore(recording.Config{
		Dir:     filepath.Join(d.cfg.dataDir, "recordings"),
		Keys:    keys,
		Quota:   max(size/4, 64<<20),
		MinFree: max(size/10, 128<<20),
		Logger:  d.log.With("svc", "recordings"),
	})
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	d.media = &mediaEngine{recordings: rec, prompts: &prompts.Library{Dir: filepath.Join(d.cfg.dataDir, "prompts")}}
	return nil
}

// mediaKeys is the media data key PID 1 handed over (init/keys purpose
// "media"). Without one (--dev mode, or a PID 1 that predates the key
// hierarchy) recordings are sealed under a key derived from the device
// key instead, as issue 16 allows until then: still bound to this box.
func mediaKeys(id bootstrap) (recording.Keys, bool, error) {
	if len(id.MediaKey) == 32 {
		k, err := recording.StaticKey(id.MediaKey)
		return k, true, err
	}
	k, err := hkdf.Key(sha256.New, id.DeviceKey, nil, "edgepbx media key from the device key", 32)
	if err != nil {
		return nil, false, err
	}
	keys, err := recording.StaticKey(k)
	return keys, false, err
}

// runRecordings deletes recordings past their retention, hourly.
func (d *daemon) runRecordings(ctx context.Context) error {
	d.media.recordings.Run(ctx, recordingSweep)
	return nil
}
