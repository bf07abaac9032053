package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Load loads the modules at paths (relative to dir, in the order Order
// returned) with finit_module. A module that is already loaded (EEXIST) is
// fine. The first failure stops loading; the error names the module.
func Load(ctx context.Context, dir string, paths []string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("load modules: %w", err)
		}
		if err := checkRelPath(p); err != nil {
			return fmt.Errorf("load module %s: %w", NameFromPath(p), err)
		}
		name := NameFromPath(p)
		start := time.Now()
		already, err := loadOne(filepath.Join(dir, p))
		if err != nil {
			return fmt.Errorf("load module %s (%s): %w", name, p, err)
		}
		log.Debug("module loaded", "module", name, "already", already, "dur", time.Since(start))
	}
	return nil
}

func loadOne(file string) (already bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for {
		err = unix.FinitModule(int(f.Fd()), "", 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EEXIST):
		return true, nil
	default:
		return false, fmt.Errorf("finit_module: %w", err)
	}
}
