package control

import (
	"context"
	"errors"
	"regexp"
	"slices"
)

// Floors are PID 1's monotonic values (licence offline time, firmware
// version floor), kept in TPM NV where the board has a TPM so that
// restoring an older /data cannot rewind them. edgepbxd reads them and asks
// to raise them; PID 1 accepts only forward moves.
type Floors interface {
	All() map[string]uint64
	// Raise refuses a lower value (an error naming "value") and treats an
	// equal one as done.
	Raise(name string, v uint64) error
	Hardware() bool
}

// FloorState is the data of a GetFloors reply.
type FloorState struct {
	Floors map[string]uint64 `json:"floors"`
	// Hardware: the floors are in the TPM; false: in a file on /data,
	// which a restored /data rewinds.
	Hardware bool `json:"hardware"`
}

// RaiseFloorRequest moves floor Name up to Value.
type RaiseFloorRequest struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// FloorNames are the only floors edgepbxd may raise: the licence's offline
// counter, its value at the last good check-in and the check-in sequence.
// A fixed list, so a compromised edgepbxd cannot fill the 16 NV slots with
// names of its own and crowd them out. The firmware version floor
// (UpdateVersionFloor) is not among them: only PID 1's installer raises it,
// after it verified a bundle itself; a floor edgepbxd could push to 2^64-1
// would refuse every later update, and nothing lowers a TPM floor.
var FloorNames = []string{"license.run", "license.good", "license.seq"}

// UpdateVersionFloor is the anti-rollback floor PID 1 keeps for firmware
// updates (in the TPM when there is one); GetFloors shows it.
const UpdateVersionFloor = "update.version"

// Same rule as init/keys (which the daemon must not link: it brings go-tpm).
var floorNameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,23}$`)

func (r RaiseFloorRequest) validate() error {
	if !floorNameRE.MatchString(r.Name) {
		return fieldErr("name", "1-24 characters a-z 0-9 . _ -, starting with a letter")
	}
	if !slices.Contains(FloorNames, r.Name) {
		return fieldErr("name", "%q is not a floor PID 1 keeps", r.Name)
	}
	return nil
}

var (
	errNoFloors   = errors.New("control: floors not available")
	errFloorsRate = errors.New("control: floor raises rate limited")
)

func (s *Server) dispatchFloors(t Type, p []byte) Reply {
	f := s.cfg.Floors
	switch t {
	case TypeGetFloors:
		var empty struct{}
		if err := decodeStrict(p, &empty); err != nil {
			return fail(err)
		}
		if f == nil {
			return fail(errNoFloors)
		}
		return ok(FloorState{Floors: f.All(), Hardware: f.Hardware()})
	case TypeRaiseFloor:
		var r RaiseFloorRequest
		if err := decodeStrict(p, &r); err != nil {
			return fail(err)
		}
		if err := r.validate(); err != nil {
			return fail(err)
		}
		if f == nil {
			return fail(errNoFloors)
		}
		// Every accepted raise is an NV write: bounded so a compromised
		// edgepbxd cannot wear out the TPM's NV.
		if !s.floors.allow() {
			return fail(errFloorsRate)
		}
		// PID 1's own check, whatever the store below does: forward only.
		if cur, ok := f.All()[r.Name]; ok && r.Value < cur {
			return fail(fieldErr("value", "%s is %d: a floor only moves forward", r.Name, cur))
		}
		if err := f.Raise(r.Name, r.Value); err != nil {
			return fail(err)
		}
		return ok(nil)
	}
	return fail(errors.New("control: not a floors request"))
}

// GetFloors returns every floor.
func (c *Client) GetFloors(ctx context.Context) (FloorState, error) {
	var s FloorState
	err := c.Do(ctx, TypeGetFloors, nil, &s)
	return s, err
}

// RaiseFloor moves a floor up; PID 1 refuses a lower value.
func (c *Client) RaiseFloor(ctx context.Context, name string, v uint64) error {
	return c.Do(ctx, TypeRaiseFloor, RaiseFloorRequest{Name: name, Value: v}, nil)
}
