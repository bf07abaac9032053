package media

import (
	"context"
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
)

// TestDTLSRenegotiation: a SetPeer that repeats the leg's DTLS parameters
// (re-offer, hold with c=0.0.0.0 and resume, direction change) keeps the
// association; a changed peer fingerprint, role or transport, or a leg
// that went SDES in between, starts a new handshake (RFC 8842 §5).
func TestDTLSRenegotiation(t *testing.T) {
	_, fp1, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	_, fp2, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	base := Peer{Addr: netip.MustParseAddr("127.0.0.1"), RTPPort: 40000, RTCPMux: true}
	with := func(p Peer, fp Fingerprint, client bool) Peer {
		p.DTLS = &DTLSParams{Fingerprint: fp, Client: client}
		return p
	}
	moved := base
	moved.RTPPort = 40002
	held := base
	held.Addr = netip.IPv4Unspecified()
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, _, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	if err != nil {
		t.Fatal(err)
	}
	sdesPeer := base
	sdesPeer.SDES = &keys
	for _, tc := range []struct {
		name       string
		then       []Peer
		handshakes uint64
		client     bool
		renew      bool // RenewDTLS before then (a new dialog takes the leg)
	}{
		{"same again", []Peer{with(base, fp1, true)}, 1, true, false},
		{"hold and resume", []Peer{with(held, fp1, true), with(base, fp1, true)}, 1, true, false},
		{"new fingerprint", []Peer{with(base, fp2, true)}, 2, true, false},
		{"role swapped", []Peer{with(base, fp1, false)}, 2, false, false},
		{"new transport", []Peer{with(moved, fp1, true)}, 2, true, false},
		{"via SDES", []Peer{sdesPeer, with(base, fp1, true)}, 2, true, false},
		{"new fingerprint twice", []Peer{with(base, fp2, true), with(base, fp1, true)}, 3, true, false},
		{"renewed", []Peer{with(base, fp1, true)}, 2, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t)
			call, err := r.NewCall("reneg")
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			ctx := context.Background()
			// No phone answers: the handshakes stay pending, which is
			// what a re-offer during a slow handshake looks like.
			if err := call.SetPeer(ctx, A, with(base, fp1, true)); err != nil {
				t.Fatal(err)
			}
			first := call.legs[A].assoc
			if tc.renew {
				call.RenewDTLS(A)
				if _, ok := call.DTLSRole(A); ok {
					t.Fatal("RenewDTLS left the association current")
				}
			}
			for _, p := range tc.then {
				if err := call.SetPeer(ctx, A, p); err != nil {
					t.Fatal(err)
				}
			}
			if got := call.Stats().Legs[A].Handshakes; got != tc.handshakes {
				t.Fatalf("%d handshakes, want %d", got, tc.handshakes)
			}
			if kept := call.legs[A].assoc == first; kept != (tc.handshakes == 1) {
				t.Fatalf("association kept = %v", kept)
			}
			if client, ok := call.DTLSRole(A); !ok || client != tc.client {
				t.Fatalf("DTLSRole = %v, %v", client, ok)
			}
			if st := call.legs[A].state.Load(); st.dtls != call.legs[A].assoc {
				t.Fatal("the leg's state does not use the current association")
			}
		})
	}
}

// TestAnsweredDTLSRoles: the box's DTLS role after its offer is answered
// (RFC 4145 §4), and answers that contradict the offer are refused.
func TestAnsweredDTLSRoles(t *testing.T) {
	for _, tc := range []struct {
		offer, answer string
		client, ok    bool
	}{
		{"actpass", "active", false, true},
		{"actpass", "passive", true, true},
		{"actpass", "", false, true},
		{"active", "passive", true, true},
		{"active", "", true, true},
		{"passive", "active", false, true},
		{"active", "active", false, false},
		{"passive", "passive", false, false},
		{"actpass", "actpass", false, false},
	} {
		client, err := answeredDTLS(tc.offer, tc.answer)
		if (err == nil) != tc.ok || (tc.ok && client != tc.client) {
			t.Errorf("offer %q answer %q: client %v, err %v", tc.offer, tc.answer, client, err)
		}
	}
}
