package sipedge

import (
	"encoding/json"
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Buckets holding sealed SIP secrets, for backups (see Resealers).
const (
	ExtensionsBucket = extBucket
	TrunksBucket     = trunkBucket
)

// ResealExtension is the store.Resealer of ExtensionsBucket: both HA1s.
func ResealExtension(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	var r extRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("sip: decode extension %s: %w", key, err)
	}
	if r.User != key {
		return nil, fmt.Errorf("sip: extension stored under %q names %q", key, r.User)
	}
	var err error
	if r.MD5, err = f(r.MD5, ha1AD(AlgMD5, r.User)); err != nil {
		return nil, err
	}
	if r.SHA256, err = f(r.SHA256, ha1AD(AlgSHA256, r.User)); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// ResealTrunk is the store.Resealer of TrunksBucket.
func ResealTrunk(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	return store.ResealJSONBytes(raw, "sip/trunk/"+key, f)
}
