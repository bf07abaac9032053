package sip

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// registerTrunk keeps the box registered at an ITSP: digest with the sealed
// password, refresh at 80% of the granted expiry, backoff on failure.
func (s *Server) registerTrunk(ctx context.Context, t config.Trunk) {
	backoff := 30 * time.Second
	for {
		granted, err := s.registerOnce(ctx, t)
		wait := granted * 8 / 10
		if err != nil {
			s.deps.Log.Record(logs.Event{Kind: logs.KindTrunkRegFail, User: t.Name, Reason: err.Error()})
			s.logger.Warn("sip: trunk registration failed", "trunk", t.Name, "error", err)
			wait = backoff
			if backoff < 10*time.Minute {
				backoff *= 2
			}
		} else {
			s.deps.Log.Record(logs.Event{Kind: logs.KindTrunkReg, User: t.Name, Reason: "expires " + granted.String()})
			backoff = 30 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// registerOnce sends one REGISTER (answering a challenge) and returns the
// expiry the ITSP granted.
func (s *Server) registerOnce(ctx context.Context, t config.Trunk) (time.Duration, error) {
	r := t.Register
	pw, err := trunkPassword(s.deps.Store, t.Name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	aor := sip.Uri{Scheme: "sip", User: r.Username, Host: r.Domain}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: r.Domain})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(16)}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	contactHost := s.contactHost(r.Transport)
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+r.Username+"@"+contactHost+";transport="+r.Transport+">"))
	req.AppendHeader(sip.NewHeader("Expires", secs(r.Expires)))
	req.SetDestination(r.Registrar)
	req.SetTransport(strings.ToUpper(r.Transport))
	res, err := s.client.Do(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("register %s: %w", r.Registrar, err)
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		res, err = s.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: r.Username, Password: pw})
		if err != nil {
			return 0, fmt.Errorf("register %s with digest: %w", r.Registrar, err)
		}
	}
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("register %s: %d %s", r.Registrar, res.StatusCode, res.Reason)
	}
	granted := r.Expires
	if v := res.GetHeader("Expires"); v != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(v.Value())); err == nil {
			granted = time.Duration(n) * time.Second
		}
	}
	for _, h := range res.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			if v, ok := c.Params.Get("expires"); ok {
				if n, err := strconv.Atoi(v); err == nil {
					granted = time.Duration(n) * time.Second
				}
			}
		}
	}
	if granted < time.Minute {
		granted = time.Minute
	}
	return granted, nil
}

func (s *Server) contactHost(transport string) string {
	if a := s.Addr(transport); a != nil {
		return a.String()
	}
	if a := s.Addr("udp"); a != nil {
		return a.String()
	}
	return "invalid"
}
