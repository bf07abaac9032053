package netfw

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/google/nftables"

	"github.com/edgepbx/edgepbx/init/atomicfile"
	"github.com/edgepbx/edgepbx/init/strictjson"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Bans are persisted as one small JSON file written atomically: a temp
// file, fsync, rename, fsync of the directory. A power cut leaves either
// the old or the new file.

const (
	banFileVersion = 1
	maxBanFile     = 8 << 20
)

type banFile struct {
	Version int   `json:"version"`
	Bans    []Ban `json:"bans"`
}

func (f *Firewall) persist(bans map[netip.Prefix]Ban) error {
	if f.banPath == "" {
		return nil
	}
	list := make([]Ban, 0, len(bans))
	for _, b := range bans {
		list = append(list, b)
	}
	slices.SortFunc(list, func(a, b Ban) int { return comparePrefix(a.Prefix, b.Prefix) })
	data, err := json.Marshal(banFile{Version: banFileVersion, Bans: list})
	if err != nil {
		return fmt.Errorf("encode bans: %w", err)
	}
	return atomicfile.Write(f.banPath, data, 0o600)
}

// loadBans reads the ban file; a missing file means no bans. Entries are
// validated like API input; expired ones are dropped, and so are ones
// wider than the ban floors (returned as refused: a file written before
// the floors, or edited by someone with the disk, must not cut the box off
// the world at boot).
func loadBans(path string, now time.Time) (bans, refused []Ban, err error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load bans: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxBanFile+1))
	if err != nil {
		return nil, nil, fmt.Errorf("load bans: %w", err)
	}
	return parseBans(data, now)
}

func parseBans(data []byte, now time.Time) (bans, refused []Ban, err error) {
	if len(data) > maxBanFile {
		return nil, nil, fmt.Errorf("load bans: file larger than %d bytes", maxBanFile)
	}
	var bf banFile
	if err := strictjson.Unmarshal(data, &bf); err != nil {
		return nil, nil, fmt.Errorf("load bans: %w", err)
	}
	if bf.Version != banFileVersion {
		return nil, nil, fmt.Errorf("load bans: version %d, want %d", bf.Version, banFileVersion)
	}
	// Wide entries go first, so they cannot make the rest overlap.
	prefixes := make([]netip.Prefix, 0, len(bf.Bans))
	var kept []Ban
	for _, b := range bf.Bans {
		if err := fwspec.Reason(b.Reason); err != nil {
			return nil, nil, fmt.Errorf("load bans: entry %v: %w", b.Prefix, err)
		}
		if _, err := fwspec.BanPrefix(b.Prefix); err != nil && b.Prefix.IsValid() {
			refused = append(refused, b)
			continue
		}
		prefixes = append(prefixes, b.Prefix)
		kept = append(kept, b)
	}
	if err := checkPrefixes(prefixes); err != nil {
		return nil, nil, fmt.Errorf("load bans: %w", err)
	}
	for _, b := range kept {
		if b.Expires.After(now) {
			bans = append(bans, b)
		}
	}
	return bans, refused, nil
}

// RestoreBans adopts the ban file at path after the ruleset is already live:
// PID 1 installs the firewall before /data is mounted (so the box is never
// open while disks and modules settle), then hands over the persisted bans.
// They enter the ban sets element by element with their remaining lifetime,
// and later Ban/Unban calls persist to path. A corrupt file is an error and
// changes nothing.
func (f *Firewall) RestoreBans(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.ready(); err != nil {
		return err
	}
	now := f.now()
	bans, refused, err := loadBans(path, now)
	if err != nil {
		return fmt.Errorf("netfw: %w", err)
	}
	for _, b := range refused {
		f.log.Warn("netfw: dropping persisted ban wider than the floor", "prefix", b.Prefix, "reason", b.Reason)
	}
	next := make(map[netip.Prefix]Ban, len(f.bans)+len(bans))
	for k, v := range f.bans {
		next[k] = v
	}
	var add []Ban
	for _, b := range bans {
		if f.allowlisted(b.Prefix) {
			f.log.Warn("netfw: dropping persisted ban of allowlisted prefix", "prefix", b.Prefix)
			continue
		}
		if _, ok := next[b.Prefix]; ok || len(next) >= f.bounds.MaxBans {
			continue
		}
		next[b.Prefix] = b
		add = append(add, b)
	}
	if len(add) > 0 {
		err := f.nlDo(func(cc *nftables.Conn) error {
			for _, b := range add {
				ttl := b.Expires.Sub(now)
				if ttl < time.Second {
					ttl = time.Second
				}
				if err := cc.SetAddElements(f.banSet(famOf(b.Prefix.Addr())), intervalElems([]addrRange{prefixRange(b.Prefix)}, ttl)); err != nil {
					return err
				}
			}
			return cc.Flush()
		})
		if err != nil {
			return fmt.Errorf("netfw: restore %d bans: %w", len(add), err)
		}
	}
	f.bans, f.banPath = next, path
	f.log.Info("netfw: bans restored", "count", len(add), "file", path)
	return nil
}
