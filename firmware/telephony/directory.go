package telephony

import (
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// Directory resolves trunks from the stored telephony configuration (its
// host:port and transport), so trunks added on the dial plan page carry
// calls at once; extensions, and trunks only the SIP edge knows, resolve
// in the edge's directory. It is the B2BUA's call.Directory and
// call.CallerIDs.
type Directory struct {
	call.Directory
	tel *pbxconfig.TelephonyStore
}

// NewDirectory puts the stored trunks in front of the edge's directory.
func NewDirectory(edge call.Directory, tel *pbxconfig.TelephonyStore) Directory {
	return Directory{Directory: edge, tel: tel}
}

// Trunk is where calls over the named trunk go.
func (d Directory) Trunk(name string) (call.Target, bool) {
	tr, ok := d.tel.Current().Trunk(name)
	if !ok {
		return d.Directory.Trunk(name)
	}
	host, port, err := net.SplitHostPort(tr.Host)
	if err != nil {
		return call.Target{}, false
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return call.Target{}, false
	}
	return call.Target{URI: sip.Uri{Scheme: "sip", Host: host, Port: n}, Dest: tr.Host, Transport: tr.Transport}, true
}

// Policy is the SRTP policy of the leg: a stored trunk's own setting
// (dial plan page: optional, required, off); extensions and trunks only
// the SIP edge knows keep the edge's answer.
func (d Directory) Policy(id call.Identity) media.Policy {
	if id.Trunk != "" {
		if tr, ok := d.tel.Current().Trunk(id.Trunk); ok {
			return srtpPolicy(tr.SRTP)
		}
	}
	return d.Directory.Policy(id)
}

// srtpPolicy maps a stored trunk's SRTP setting to the relay's policy;
// anything but "required" and "off" is optional.
func srtpPolicy(s string) media.Policy {
	switch s {
	case "required":
		return media.SRTPRequired
	case "off":
		return media.SRTPOff
	default:
		return media.SRTPOptional
	}
}

// OutboundCallerID is what ext presents over trunk (call.CallerIDs): its
// own configured number, else the trunk's, else ("") its extension
// number; and whether the trunk is trusted with P-Asserted-Identity.
func (d Directory) OutboundCallerID(ext, trunk string) (string, bool) {
	cur := d.tel.Current()
	tr, ok := cur.Trunk(trunk)
	if n := cur.CallerIDs[ext]; n != "" {
		return n, ok && tr.AssertIdentity
	}
	if !ok {
		return "", false
	}
	return tr.CallerID, tr.AssertIdentity
}

// Credentials answer a trunk's INVITE challenge with the dial plan page's
// username and sealed password; else the SIP edge's trunk configuration.
func (d Directory) Credentials(name string) (string, string, bool) {
	if tr, ok := d.tel.Current().Trunk(name); ok && tr.Username != "" {
		if pw, err := d.tel.TrunkPassword(name); err == nil && len(pw) > 0 {
			return tr.Username, string(pw), true
		}
	}
	return d.Directory.Credentials(name)
}
