package sipedge

import "github.com/edgepbx/edgepbx/init/control"

// PID 1's control client is the Banner edgepbxd passes in.
var _ Banner = (*control.Client)(nil)
