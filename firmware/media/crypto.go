package media

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// replayWindow is the SRTP/SRTCP replay window. pion's raw Context has
// replay protection off unless asked for.
const replayWindow = 64

// srtpCtx guards one pion Context (not safe for concurrent use). All of a
// call's sockets are served by one loop, so the lock is never contended;
// it keeps the contexts safe if that ever changes.
type srtpCtx struct {
	mu sync.Mutex
	c  *srtp.Context
}

func (s *srtpCtx) decryptRTP(dst, pkt []byte, h *rtp.Header) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.DecryptRTP(dst, pkt, h)
}

func (s *srtpCtx) encryptRTP(dst, pkt []byte, h *rtp.Header) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.EncryptRTP(dst, pkt, h)
}

func (s *srtpCtx) decryptRTCP(dst, pkt []byte) ([]byte, error) {
	if len(pkt) < 8 {
		return nil, fmt.Errorf("short SRTCP packet")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.DecryptRTCP(dst, pkt, nil)
}

func (s *srtpCtx) encryptRTCP(dst, pkt []byte) ([]byte, error) {
	if len(pkt) < 8 {
		return nil, fmt.Errorf("short RTCP packet")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.EncryptRTCP(dst, pkt, nil)
}

// legCrypto holds the four contexts of one leg: in = what its peer sends
// (peer's key), out = what the box sends to it (box's key). RTP and RTCP
// get separate contexts (each keeps its own replay window and rollover
// counter).
type legCrypto struct {
	inRTP, inRTCP, outRTP, outRTCP *srtpCtx
	profile                        srtp.ProtectionProfile
}

// NewSRTPContext creates a pion SRTP context with replay protection on.
// Use it (not srtp.CreateContext) for every context that decrypts.
func NewSRTPContext(key, salt []byte, p srtp.ProtectionProfile) (*srtp.Context, error) {
	c, err := srtp.CreateContext(key, salt, p, srtp.SRTPReplayProtection(replayWindow), srtp.SRTCPReplayProtection(replayWindow))
	if err != nil {
		return nil, fmt.Errorf("media: SRTP context (%s): %w", p, err)
	}
	return c, nil
}

func newLegCrypto(p srtp.ProtectionProfile, sendKey, sendSalt, recvKey, recvSalt []byte) (*legCrypto, error) {
	lc := &legCrypto{profile: p}
	for _, x := range []struct {
		dst       **srtpCtx
		key, salt []byte
	}{
		{&lc.inRTP, recvKey, recvSalt}, {&lc.inRTCP, recvKey, recvSalt},
		{&lc.outRTP, sendKey, sendSalt}, {&lc.outRTCP, sendKey, sendSalt},
	} {
		c, err := NewSRTPContext(x.key, x.salt, p)
		if err != nil {
			return nil, err
		}
		*x.dst = &srtpCtx{c: c}
	}
	return lc, nil
}

func sdesCrypto(k SDESKeys) (*legCrypto, error) {
	if k.Send.Suite != k.Recv.Suite {
		// RFC 4568 §7.1.2: the answer uses the offered suite of its tag.
		return nil, fmt.Errorf("media: SDES suites differ (%s/%s)", k.Send.Suite, k.Recv.Suite)
	}
	p, err := k.Send.Suite.Profile()
	if err != nil {
		return nil, err
	}
	return newLegCrypto(p, k.Send.Key, k.Send.Salt, k.Recv.Key, k.Recv.Salt)
}

// AnswerSDES picks a suite from an offer's a=crypto values and makes the
// box's own key for it, with the offer's tag (RFC 4568 §7.1). The result is
// ready for Peer.SDES and for Local.Crypto.
func AnswerSDES(offered []string, allowed []sdes.Suite) (SDESKeys, bool, error) {
	recv, ok := sdes.Select(offered, allowed)
	if !ok {
		return SDESKeys{}, false, nil
	}
	send, err := sdes.New(recv.Tag, recv.Suite)
	if err != nil {
		return SDESKeys{}, false, err
	}
	return SDESKeys{Send: send, Recv: recv}, true, nil
}

// sdesState is the SDES keys a leg uses and the contexts made for them.
type sdesState struct {
	keys   SDESKeys
	crypto *legCrypto
}

func sameKey(a, b sdes.Crypto) bool {
	return a.Suite == b.Suite && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Salt, b.Salt)
}

// continueFrom keeps the contexts of a direction whose key a new
// negotiation did not change (hold, resume, a session refresh with SDP):
// a fresh context would restart the rollover counter and the replay
// window, so after a sequence wrap the same key would encrypt under a
// packet index it has used before, and the peer's old packets could be
// replayed. A changed key gets its fresh contexts.
func (lc *legCrypto) continueFrom(prev *sdesState, k SDESKeys) {
	if prev == nil || prev.crypto == nil {
		return
	}
	if sameKey(prev.keys.Send, k.Send) {
		lc.outRTP, lc.outRTCP = prev.crypto.outRTP, prev.crypto.outRTCP
	}
	if sameKey(prev.keys.Recv, k.Recv) {
		lc.inRTP, lc.inRTCP = prev.crypto.inRTP, prev.crypto.inRTCP
	}
}
