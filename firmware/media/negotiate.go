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

// Reoffer is Offer for a subsequent offer in the dialog of side's
// current peer (hold, resume, a refresh): a leg with SDES keeps the key
// the box sends with, so a phone that does not re-key on a re-INVITE
// (baresip 1.0 keeps its first receive key) still decrypts, and the
// box's send context continues (SetPeer keeps it for an unchanged key).
// A new peer on the leg (a transfer) gets Offer's fresh key instead.
func (c *Call) Reoffer(s Side, pol Policy, sessionID, version uint64) (Local, error) {
	c.mu.Lock()
	cur := c.legs[s&1].sdes
	c.mu.Unlock()
	if pol == SRTPOff || cur == nil {
		return c.Offer(s, pol, sessionID, version)
	}
	send := cur.keys.Send
	return Local{Addr: c.r.cfg.Addr, RTPPort: c.LocalPort(s), SessionID: sessionID, SessionVersion: version,
		Crypto: &send, BestEffort: pol == SRTPOptional}, nil
}

// OfferDTLS makes the box's side of a DTLS-SRTP offer to side's peer: the
// relay's fingerprint and, when the leg has a DTLS association and renew
// is false, a=setup with the box's established role (RFC 8842 §5: a
// subsequent offer that keeps the association); a=setup:actpass else
// (the answerer picks, and a new handshake follows).
func (c *Call) OfferDTLS(s Side, sessionID, version uint64, renew bool) (Local, error) {
	if c.r.cfg.Certificate == nil {
		return Local{}, errors.New("media: DTLS-SRTP offer but relay has no certificate")
	}
	fp := FingerprintOf(c.r.cfg.Certificate.Certificate[0])
	l := Local{Addr: c.r.cfg.Addr, RTPPort: c.LocalPort(s), SessionID: sessionID, SessionVersion: version, Fingerprint: &fp, Setup: "actpass"}
	if client, ok := c.DTLSRole(s); ok && !renew {
		l.Setup = "passive"
		if client {
			l.Setup = "active"
		}
	}
	return l, nil
}

// answeredDTLS is the box's DTLS role after its offer with setup was
// answered with answerSetup (RFC 4145 §4: an absent a=setup in the answer
// means active).
func answeredDTLS(offerSetup, answerSetup string) (client bool, err error) {
	switch offerSetup {
	case "active":
		if answerSetup == "passive" || answerSetup == "" {
			return true, nil
		}
	case "passive":
		if answerSetup == "active" || answerSetup == "" {
			return false, nil
		}
	default: // actpass
		switch answerSetup {
		case "passive":
			return true, nil
		case "active", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("%w: a=setup:%.16s answers a=setup:%s", ErrSDP, answerSetup, offerSetup)
}

// Answered applies side's SDP answer to an offer made with Offer or
// OfferDTLS: it configures the leg (pinholes, keys) and checks the policy.
func (c *Call) Answered(ctx context.Context, s Side, offered Local, answer Remote, pol Policy) error {
	p := PeerFrom(answer)
	if offered.Fingerprint != nil {
		if answer.Fingerprint == nil || (answer.Proto != ProtoDTLS && answer.Proto != protoDTLSF) {
			return errors.New("media: answer to a DTLS-SRTP offer without DTLS-SRTP")
		}
		client, err := answeredDTLS(offered.Setup, answer.Setup)
		if err != nil {
			return err
		}
		p.DTLS = &DTLSParams{Fingerprint: *answer.Fingerprint, Client: client}
		return c.SetPeer(ctx, s, p)
	}
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
// Rewrite(otherSidesRemote, local) with local.Answering = &offer and then
// calls AnswerSent (a new DTLS association waits for it).
func (c *Call) Answer(ctx context.Context, s Side, offer Remote, pol Policy, sessionID, version uint64) (Local, error) {
	return c.answer(ctx, s, offer, pol, sessionID, version, false)
}

// Reanswer is Answer for a subsequent offer in the dialog of side's
// current peer (hold, resume): an SDES leg keeps the key the box sends
// with, as Reoffer does. A new peer on the leg (Replaces, pickup) is
// answered with Answer's fresh key: it must not learn a key its
// predecessor knows.
func (c *Call) Reanswer(ctx context.Context, s Side, offer Remote, pol Policy, sessionID, version uint64) (Local, error) {
	return c.answer(ctx, s, offer, pol, sessionID, version, true)
}

func (c *Call) answer(ctx context.Context, s Side, offer Remote, pol Policy, sessionID, version uint64, keep bool) (Local, error) {
	l := Local{Addr: c.r.cfg.Addr, RTPPort: c.LocalPort(s), SessionID: sessionID, SessionVersion: version, Answering: &offer, RTCPMux: offer.RTCPMux}
	p := PeerFrom(offer)
	switch {
	case offer.Fingerprint != nil && (offer.Proto == ProtoDTLS || offer.Proto == protoDTLSF):
		if c.r.cfg.Certificate == nil {
			return Local{}, errors.New("media: DTLS-SRTP offered but relay has no certificate")
		}
		// RFC 5763 §5: the answerer takes active when it may, but a
		// re-offer from the same peer keeps the established roles (RFC
		// 8842 §5) so the association survives hold/resume.
		client := c.dtlsRoleFor(s, offer.Setup, *offer.Fingerprint)
		p.DTLS = &DTLSParams{Fingerprint: *offer.Fingerprint, Client: client}
		p.awaitAnswer = true
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
			if keep {
				c.keepSendKey(s, &keys)
			}
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

// keepSendKey answers a re-offer of side's current peer with the key the
// box already sends with when the suite stays (see Reoffer); the tag is
// the new offer's.
func (c *Call) keepSendKey(s Side, k *SDESKeys) {
	c.mu.Lock()
	cur := c.legs[s&1].sdes
	c.mu.Unlock()
	if cur == nil || cur.keys.Send.Suite != k.Recv.Suite {
		return
	}
	send := cur.keys.Send
	send.Tag = k.Recv.Tag
	k.Send = send
}
