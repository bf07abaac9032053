package media

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
)

// Policy is the media encryption policy of one extension or trunk.
type Policy int

// Policies.
const (
	// SRTPOptional encrypts when the peer offers or accepts it.
	SRTPOptional Policy = iota
	// SRTPRequired refuses a leg that would carry plain RTP.
	SRTPRequired
	// SRTPOff never offers SRTP (a trunk that breaks on RTP/SAVP) but
	// still accepts an encrypted offer.
	SRTPOff
)

// ErrSRTPRequired is returned when policy requires SRTP and the peer does
// not do it; the B2BUA answers 488 Not Acceptable Here.
var ErrSRTPRequired = errors.New("media: SRTP required but not negotiated")

// Offer makes the box's side of an SDP offer to side's peer: its address
// and port, a fresh SDES key unless the policy is SRTPOff. SRTPRequired
// offers RTP/SAVP; SRTPOptional offers the key on RTP/AVP (best effort),
// so a peer without SRTP answers plain RTP rather than 488. The B2BUA sends
// Rewrite(otherSidesRemote, local) and keeps local for Answered.
func (c *Call) Offer(s Side, pol Policy, sessionID, version uint64) (Local, error) {
	l := Local{Addr: c.r.cfg.Addr, RTPPort: c.LocalPort(s), SessionID: sessionID, SessionVersion: version}
	if pol == SRTPOff {
		return l, nil
	}
	cr, err := sdes.New(1, sdes.AES128CMSHA1_80)
	if err != nil {
		return Local{}, err
	}
	l.Crypto = &cr
	l.BestEffort = pol == SRTPOptional
	return l, nil
}

// Answered applies side's SDP answer to an offer made with Offer: it
// configures the leg (pinholes, keys) and checks the policy.
func (c *Call) Answered(ctx context.Context, s Side, offered Local, answer Remote, pol Policy) error {
	p := PeerFrom(answer)
	// A best-effort offer accepted: keys on RTP/AVP.
	bestEffort := offered.BestEffort && offered.Crypto != nil && !answer.Secure() && len(answer.Crypto) > 0
	if answer.Secure() || bestEffort {
		if offered.Crypto == nil || len(answer.Crypto) == 0 {
			return fmt.Errorf("media: answer asks for %s we did not offer", answer.Proto)
		}
		recv, err := sdes.Parse(answer.Crypto[0])
		if err != nil {
			return fmt.Errorf("media: answer a=crypto: %w", err)
		}
		if recv.Tag != offered.Crypto.Tag || recv.Suite != offered.Crypto.Suite {
			return errors.New("media: answer a=crypto does not match the offer")
		}
		p.SDES = &SDESKeys{Send: *offered.Crypto, Recv: recv}
	} else if pol == SRTPRequired {
		return ErrSRTPRequired
	}
	return c.SetPeer(ctx, s, p)
}

// Answer configures side from its peer's offer and returns the box's side
// of the answer: SDES if offered (suites in sdes.Suites order), DTLS-SRTP
// if offered (the box takes a=setup:active when the peer allows it, else
// passive), plain RTP otherwise. The B2BUA sends
// Rewrite(otherSidesRemote, local) with local.Answering = &offer.
func (c *Call) Answer(ctx context.Context, s Side, offer Remote, pol Policy, sessionID, version uint64) (Local, error) {
	l := Local{Addr: c.r.cfg.Addr, RTPPort: c.LocalPort(s), SessionID: sessionID, SessionVersion: version, Answering: &offer, RTCPMux: offer.RTCPMux}
	p := PeerFrom(offer)
	switch {
	case offer.Fingerprint != nil && (offer.Proto == ProtoDTLS || offer.Proto == protoDTLSF):
		if c.r.cfg.Certificate == nil {
			return Local{}, errors.New("media: DTLS-SRTP offered but relay has no certificate")
		}
		client := offer.Setup == "actpass" || offer.Setup == "passive" || offer.Setup == ""
		p.DTLS = &DTLSParams{Fingerprint: *offer.Fingerprint, Client: client}
		fp := FingerprintOf(c.r.cfg.Certificate.Certificate[0])
		l.Fingerprint = &fp
		l.Setup = "passive"
		if client {
			l.Setup = "active"
		}
	case len(offer.Crypto) > 0:
		keys, ok, err := AnswerSDES(offer.Crypto, sdes.Suites())
		bestEffort := !offer.Secure() // keys on RTP/AVP: plain RTP is an acceptable answer
		if err != nil && !(bestEffort && pol != SRTPRequired) {
			return Local{}, err
		}
		if err == nil && ok {
			p.SDES = &keys
			l.Crypto = &keys.Send
			l.BestEffort = bestEffort
			break
		}
		if !bestEffort || pol == SRTPRequired {
			return Local{}, fmt.Errorf("%w: no acceptable a=crypto offered", ErrSRTPRequired)
		}
	case pol == SRTPRequired:
		return Local{}, ErrSRTPRequired
	case offer.Secure():
		// RTP/SAVP without keys cannot be answered with plain RTP.
		return Local{}, fmt.Errorf("%w: %s offer without keys", ErrSRTPRequired, offer.Proto)
	}
	if !slices.Contains([]string{"", "sendrecv", "sendonly", "recvonly", "inactive"}, offer.Direction) {
		return Local{}, fmt.Errorf("%w: direction", ErrSDP)
	}
	if err := c.SetPeer(ctx, s, p); err != nil {
		return Local{}, err
	}
	return l, nil
}
