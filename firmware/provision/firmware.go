package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bounds on uploaded phone firmware.
const (
	MaxFirmwareBytes = 512 << 20
	maxFirmwareFiles = 64
	maxFirmwareName  = 96
)

// Firmware is an uploaded phone firmware file; the bytes live in
// DataDir/provision/firmware/<id>, never in the database or in memory.
type Firmware struct {
	ID       string    `json:"id"` // sha256 of the content, hex (first 32)
	Name     string    `json:"name"`
	Vendor   Vendor    `json:"vendor"`
	Models   []string  `json:"models"`
	Version  string    `json:"version"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	Uploaded time.Time `json:"uploaded"`
}

// FirmwareMeta is what an admin says about an upload.
type FirmwareMeta struct {
	Name    string   `json:"name"`
	Vendor  Vendor   `json:"vendor"`
	Models  []string `json:"models"`
	Version string   `json:"version"`
}

// ParseFirmwareMeta validates upload metadata (from query parameters or
// headers: untrusted). Models are a comma-separated list.
func ParseFirmwareMeta(name, vendor, models, version string) (FirmwareMeta, error) {
	m := FirmwareMeta{Name: name, Vendor: Vendor(strings.ToLower(vendor)), Version: version}
	if !validFileName(name) {
		return m, &FieldError{"name", errors.New("1-96 of letters, digits, . _ - (not starting with .)")}
	}
	if !ValidVendor(m.Vendor) || m.Vendor == Linphone {
		return m, &FieldError{"vendor", errors.New("a hardware phone vendor")}
	}
	for _, x := range strings.Split(models, ",") {
		x = strings.TrimSpace(x)
		if !validModel(x) {
			return m, &FieldError{"models", errors.New("comma-separated model names (letters, digits, - _)")}
		}
		if !slices.Contains(m.Models, x) {
			m.Models = append(m.Models, x)
		}
	}
	if len(m.Models) > 16 {
		return m, &FieldError{"models", errors.New("at most 16")}
	}
	if !validVersion(version) {
		return m, &FieldError{"version", errors.New("1-32 of letters, digits, . _ -")}
	}
	return m, nil
}

func validFileName(n string) bool {
	if n == "" || len(n) > maxFirmwareName || n[0] == '.' {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (s *Service) firmwareDir() string { return filepath.Join(s.deps.DataDir, "provision", "firmware") }

// UploadFirmware streams r to disk (bounded, hashed on the way, fsynced,
// renamed into place) and records it. It never holds the file in memory.
func (s *Service) UploadFirmware(ctx context.Context, meta FirmwareMeta, r io.Reader, actor, source string) (Firmware, error) {
	if s.deps.DataDir == "" {
		return Firmware{}, errors.New("provision: no data directory for firmware")
	}
	if n, err := s.countFirmware(); err != nil {
		return Firmware{}, err
	} else if n >= maxFirmwareFiles {
		return Firmware{}, &FieldError{"file", fmt.Errorf("at most %d firmware files: delete one first", maxFirmwareFiles)}
	}
	dir := s.firmwareDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Firmware{}, fmt.Errorf("provision: firmware dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return Firmware{}, fmt.Errorf("provision: firmware temp: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(ctxReader{ctx, r}, s.maxFirmware()+1))
	if err != nil {
		return Firmware{}, fmt.Errorf("provision: firmware upload: %w", err)
	}
	if n > s.maxFirmware() {
		return Firmware{}, &FieldError{"file", fmt.Errorf("larger than %d bytes", s.maxFirmware())}
	}
	if n == 0 {
		return Firmware{}, &FieldError{"file", errors.New("empty")}
	}
	if err := tmp.Sync(); err != nil {
		return Firmware{}, fmt.Errorf("provision: firmware sync: %w", err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	f := Firmware{ID: sum[:32], Name: meta.Name, Vendor: meta.Vendor, Models: meta.Models, Version: meta.Version, Size: n, SHA256: sum, Uploaded: s.now()}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, f.ID)); err != nil {
		return Firmware{}, fmt.Errorf("provision: firmware rename: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	err = s.deps.Store.Update(func(tx *store.Tx) error {
		if err := tx.Put(bucketFirmware, f.ID, f); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "provision.firmware.upload", f.ID, nil, f)
	})
	return f, err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (s *Service) countFirmware() (int, error) {
	n := 0
	err := s.deps.Store.View(func(tx *store.Tx) error {
		return tx.ForEach(bucketFirmware, func(string, []byte) error { n++; return nil })
	})
	return n, err
}

// FirmwareList returns the uploaded firmware, newest first.
func (s *Service) FirmwareList() ([]Firmware, error) {
	var out []Firmware
	err := s.deps.Store.View(func(tx *store.Tx) error {
		return tx.ForEach(bucketFirmware, func(_ string, raw []byte) error {
			var f Firmware
			if err := json.Unmarshal(raw, &f); err != nil {
				return err
			}
			out = append(out, f)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Firmware) int { return b.Uploaded.Compare(a.Uploaded) })
	return out, err
}

// DeleteFirmware removes a firmware file and its record.
func (s *Service) DeleteFirmware(id, actor, source string) error {
	if len(id) != 32 || !isHexString(id) {
		return &FieldError{"id", errors.New("32 hex digits")}
	}
	err := s.deps.Store.Update(func(tx *store.Tx) error {
		var f Firmware
		ok, err := tx.Get(bucketFirmware, id, &f)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if err := tx.Delete(bucketFirmware, id); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "provision.firmware.delete", id, f, nil)
	})
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.firmwareDir(), id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("provision: remove firmware: %w", err)
	}
	return nil
}

func isHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// firmwareFor is the newest firmware whose vendor and models match.
func (s *Service) firmwareFor(v Vendor, model string) (Firmware, bool) {
	if model == "" {
		return Firmware{}, false
	}
	list, err := s.FirmwareList()
	if err != nil {
		return Firmware{}, false
	}
	for _, f := range list {
		if f.Vendor == v && slices.ContainsFunc(f.Models, func(m string) bool { return strings.EqualFold(m, model) }) {
			return f, true
		}
	}
	return Firmware{}, false
}

// serveFirmware sends a firmware file to a phone whose User-Agent names a
// model it is for (firmware is not secret; the match keeps a phone from
// being handed another model's image).
func (s *Service) serveFirmware(w http.ResponseWriter, r *http.Request, id, ua string, src netip.Addr) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	v, model, _, _ := parseUA(ua)
	var f Firmware
	found := false
	if len(id) == 32 && isHexString(id) {
		_ = s.deps.Store.View(func(tx *store.Tx) error {
			ok, err := tx.Get(bucketFirmware, id, &f)
			found = ok && err == nil
			return nil
		})
	}
	if !found || f.Vendor != v || !slices.ContainsFunc(f.Models, func(m string) bool { return strings.EqualFold(m, model) }) {
		s.logFetch("", src, "fw/"+truncate(id, 40), "firmware-refused", "", ua)
		http.NotFound(w, r)
		return
	}
	fh, err := os.Open(filepath.Join(s.firmwareDir(), f.ID))
	if err != nil {
		s.log.Error("open firmware", "id", f.ID, "err", err)
		http.NotFound(w, r)
		return
	}
	defer fh.Close()
	s.logFetch("", src, "fw/"+f.ID, "firmware", f.Version, ua)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, f.Name, f.Uploaded, fh)
}

func (s *Service) maxFirmware() int64 {
	if s.deps.MaxFirmwareBytes > 0 && s.deps.MaxFirmwareBytes < MaxFirmwareBytes {
		return s.deps.MaxFirmwareBytes
	}
	return MaxFirmwareBytes
}
