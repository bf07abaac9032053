package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/u-root/u-root/pkg/efivarfs"
	"golang.org/x/sys/unix"
)

// sysVars is u-root's efivarfs with a Remove that works on the variables
// the kernel marks immutable (every vendor variable, e.g. EdgepbxTrial):
// u-root v0.16's Remove opens the file for writing before clearing the
// immutable flag, which the kernel refuses (EPERM).
type sysVars struct {
	*efivarfs.EFIVarFS
	dir string
}

func openSysVars() (sysVars, error) {
	v, err := efivarfs.New()
	if err != nil {
		return sysVars{}, err
	}
	return sysVars{EFIVarFS: v, dir: efivarfs.DefaultVarFS}, nil
}

func (v sysVars) Remove(d efivarfs.VariableDescriptor) error {
	p := filepath.Join(v.dir, d.Name+"-"+d.GUID.String())
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return efivarfs.ErrVarNotExist
	}
	if err != nil {
		return err
	}
	flags, err := unix.IoctlGetInt(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil && flags&efivarfs.FS_IMMUTABLE_FL != 0 {
		err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, flags&^efivarfs.FS_IMMUTABLE_FL)
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: clear immutable flag: %w", p, err)
	}
	return os.Remove(p)
}
