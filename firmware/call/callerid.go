package call

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// CallerIDs is an optional part of a Directory: what an extension presents
// on calls out over a trunk. The edge's adapter implements it from the
// telephony configuration (trunk caller ID, extension's outbound caller ID,
// trunk trusted with P-Asserted-Identity).
type CallerIDs interface {
	// OutboundCallerID is the number ext presents over trunk ("": its
	// extension number) and whether the trunk is trusted to receive
	// P-Asserted-Identity (RFC 3325; it then enforces Privacy itself).
	OutboundCallerID(ext, trunk string) (number string, assert bool)
}

// presented is what the callee's leg shows of the caller: the From user
// and host, and the P-Asserted-Identity and Privacy headers toward a
// trusted trunk.
type presented struct {
	user, host string
	pai        string // "" : none
	private    bool
}

// presentation maps the caller's identity for the B leg. Internal calls
// show the extension; calls out through a trunk show the configured
// outbound caller ID; a caller asking for Privacy: id (RFC 3323) is
// anonymous in From, and only a trusted trunk learns the identity (PAI
// with Privacy: id, which the trunk must strip before the callee).
func (c *call) presentation(reqA *sip.Request, host string) presented {
	p := presented{user: c.rec.From, host: host}
	if c.callee.Trunk == "" || c.caller.Extension == "" {
		return p
	}
	num, assert := "", false
	if src, ok := c.b.cfg.Directory.(CallerIDs); ok {
		num, assert = src.OutboundCallerID(c.caller.Extension, c.callee.Trunk)
	}
	if num == "" {
		num = c.caller.Extension
	}
	p.user = num
	if assert {
		p.pai = "<sip:" + num + "@" + host + ">"
	}
	if privacyID(reqA) {
		p.private = true
		p.user, p.host = "anonymous", "anonymous.invalid"
	}
	return p
}

// privacyID reports whether the caller asked to hide its identity
// (Privacy: id, or header/user privacy that implies it).
func privacyID(req *sip.Request) bool {
	for _, h := range req.GetHeaders("Privacy") {
		v := h.Value()
		if len(v) > 128 {
			return true // garbage is read as "hide me", never as "show me"
		}
		for _, t := range strings.FieldsFunc(v, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			switch strings.ToLower(t) {
			case "id", "user", "header", "critical":
				return true
			}
		}
	}
	return false
}

// callerID adds P-Asserted-Identity and Privacy to the B leg's INVITE.
func (c *call) callerID(inv *sip.Request, reqA *sip.Request) {
	p := c.shown
	if p.pai == "" {
		return
	}
	inv.AppendHeader(sip.NewHeader("P-Asserted-Identity", p.pai))
	if p.private {
		inv.AppendHeader(sip.NewHeader("Privacy", "id"))
	}
}
