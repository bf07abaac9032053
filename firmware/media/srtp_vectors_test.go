package media

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/pion/rtp"
)

// Published vectors run through the relay's own SDES path: an a=crypto
// line is parsed by sdes.Parse, contexts are built by sdesCrypto (what
// SetPeer uses), packets go through legCrypto's encrypt/decrypt wrappers.
//
// RFC 3711 B.3 and RFC 6188 §7.2 publish master key → session keys; RFC
// 3711 B.2, RFC 6188 §7.1 and RFC 7714 §16/§17 publish session key →
// output. SDES carries master keys, so no RFC gives a full packet for our
// path. The chain is: a small reference written from the RFC text (AES-CM
// PRF, AES-CM/HMAC-SHA1 and AES-GCM transforms on the standard library's
// AES) is first checked against every published vector, then the wrapper's
// output must equal the reference's, byte for byte, for the same master
// key/salt and packets.

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Labels of RFC 3711 §4.3.1.
const (
	labelRTPKey, labelRTPAuth, labelRTPSalt    = 0, 1, 2
	labelRTCPKey, labelRTCPAuth, labelRTCPSalt = 3, 4, 5
)

// refPRF is RFC 3711 §4.3.1/§4.3.3 with kdr 0: x = (label || 0^48) XOR
// master salt, keystream = AES-CM(master key, x·2^16). A 96-bit (GCM)
// master salt is zero-padded on the right to 112 bits, as libsrtp does.
func refPRF(tb testing.TB, masterKey, masterSalt []byte, label byte, n int) []byte {
	tb.Helper()
	var iv [16]byte
	copy(iv[:], masterSalt)
	iv[7] ^= label
	return refCTR(tb, masterKey, iv, make([]byte, n))
}

// refCTR is AES in counter mode from iv (the 16-bit block counter lives in
// the low bits, as in AES-CM).
func refCTR(tb testing.TB, key []byte, iv [16]byte, in []byte) []byte {
	tb.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, len(in))
	cipher.NewCTR(blk, iv[:]).XORKeyStream(out, in)
	return out
}

// cmIV is RFC 3711 §4.1.1: (salt·2^16) XOR (SSRC·2^64) XOR (index·2^16).
func cmIV(salt []byte, ssrc uint32, index uint64) [16]byte {
	var iv [16]byte
	copy(iv[:], salt)
	var s [4]byte
	binary.BigEndian.PutUint32(s[:], ssrc)
	for i := range 4 {
		iv[4+i] ^= s[i]
	}
	var x [8]byte
	binary.BigEndian.PutUint64(x[:], index<<16)
	for i := range 8 {
		iv[8+i] ^= x[i]
	}
	return iv
}

type refSession struct {
	key, salt, auth []byte
}

type refKeys struct {
	rtp, rtcp refSession
	tagLen    int // SRTP auth tag (HMAC suites); SRTCP's is always 10
	gcm       bool
}

func deriveRef(tb testing.TB, suite sdes.Suite, mk, ms []byte) refKeys {
	tb.Helper()
	k := refKeys{tagLen: 10}
	switch suite {
	case sdes.AES128CMSHA1_32, sdes.AES256CMSHA1_32:
		k.tagLen = 4
	case sdes.AEADAES128GCM, sdes.AEADAES256GCM:
		k.gcm = true
	}
	authLen := 20
	if k.gcm {
		authLen = 0
	}
	k.rtp = refSession{refPRF(tb, mk, ms, labelRTPKey, len(mk)), refPRF(tb, mk, ms, labelRTPSalt, len(ms)), refPRF(tb, mk, ms, labelRTPAuth, authLen)}
	k.rtcp = refSession{refPRF(tb, mk, ms, labelRTCPKey, len(mk)), refPRF(tb, mk, ms, labelRTCPSalt, len(ms)), refPRF(tb, mk, ms, labelRTCPAuth, authLen)}
	return k
}

func hmacSHA1(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha1.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func gcmSeal(tb testing.TB, key []byte, nonce [12]byte, plain, aad []byte) []byte {
	tb.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		tb.Fatal(err)
	}
	return g.Seal(nil, nonce[:], plain, aad)
}

// gcmIV is RFC 7714 §8.1 (RTP) and §9.1 (RTCP): 00 00 || SSRC || 32-bit
// value || 16-bit value, XOR the 96-bit salt.
func gcmIV(salt []byte, ssrc uint32, hi uint32, lo uint16) [12]byte {
	var iv [12]byte
	binary.BigEndian.PutUint32(iv[2:], ssrc)
	binary.BigEndian.PutUint32(iv[6:], hi)
	binary.BigEndian.PutUint16(iv[10:], lo)
	for i := range iv {
		iv[i] ^= salt[i]
	}
	return iv
}

// refSRTP protects an RTP packet without CSRCs or extension.
func refSRTP(tb testing.TB, k refKeys, pkt []byte, roc uint32) []byte {
	tb.Helper()
	hdr, pay := pkt[:12], pkt[12:]
	ssrc := binary.BigEndian.Uint32(pkt[8:])
	seq := binary.BigEndian.Uint16(pkt[2:])
	out := append([]byte(nil), hdr...)
	if k.gcm {
		return append(out, gcmSeal(tb, k.rtp.key, gcmIV(k.rtp.salt, ssrc, roc, seq), pay, hdr)...)
	}
	out = append(out, refCTR(tb, k.rtp.key, cmIV(k.rtp.salt, ssrc, uint64(roc)<<16|uint64(seq)), pay)...)
	var r [4]byte
	binary.BigEndian.PutUint32(r[:], roc)
	return append(out, hmacSHA1(k.rtp.auth, out, r[:])[:k.tagLen]...)
}

// refSRTCP protects a compound RTCP packet with SRTCP index idx (E set).
func refSRTCP(tb testing.TB, k refKeys, pkt []byte, idx uint32) []byte {
	tb.Helper()
	hdr, rest := pkt[:8], pkt[8:]
	ssrc := binary.BigEndian.Uint32(pkt[4:])
	var e [4]byte
	binary.BigEndian.PutUint32(e[:], 1<<31|idx)
	out := append([]byte(nil), hdr...)
	if k.gcm {
		out = append(out, gcmSeal(tb, k.rtcp.key, gcmIV(k.rtcp.salt, ssrc, idx>>16, uint16(idx)), rest, append(append([]byte(nil), hdr...), e[:]...))...)
		return append(out, e[:]...)
	}
	out = append(out, refCTR(tb, k.rtcp.key, cmIV(k.rtcp.salt, ssrc, uint64(idx)), rest)...)
	out = append(out, e[:]...)
	return append(out, hmacSHA1(k.rtcp.auth, out)[:10]...)
}

// Published values (RFC 3711 B.3, RFC 6188 §7.2: master → session keys).
const (
	b3MasterKey   = "E1F97A0D3E018BE0D64FA32C06DE4139"
	b3MasterSalt  = "0EC675AD498AFEEBB6960B3AABE6"
	b3CipherKey   = "C61E7A93744F39EE10734AFE3FF7A087"
	b3CipherSalt  = "30CBBC08863D8C85D49DB34A9AE1"
	b3AuthKey     = "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
	r6188Master   = "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
	r6188Salt     = "3b04803de51ee7c96423ab5b78d2"
	r6188Key      = "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4"
	r6188SaltOut  = "fa31791685ca444a9e07c6c64e93"
	r6188AuthKey  = "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05"
	rfc7714RTP    = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976 69736120 696e2070 61727465 73207472 6573"
	rfc7714RTCP   = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef"
	rfc7714Salt   = "517569642070726f2071756f"
	rfc7714Key128 = "000102030405060708090a0b0c0d0e0f"
	rfc7714Key256 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

// TestSRTPReferenceMatchesRFC checks the reference itself against every
// published vector, so the comparison below compares with the RFCs.
func TestSRTPReferenceMatchesRFC(t *testing.T) {
	kdf := []struct {
		name, mk, ms, key, salt, auth string
	}{
		{"RFC 3711 B.3", b3MasterKey, b3MasterSalt, b3CipherKey, b3CipherSalt, b3AuthKey},
		{"RFC 6188 7.2", r6188Master, r6188Salt, r6188Key, r6188SaltOut, r6188AuthKey},
	}
	for _, tc := range kdf {
		mk, ms := unhex(t, tc.mk), unhex(t, tc.ms)
		for _, x := range []struct {
			label byte
			want  string
		}{{labelRTPKey, tc.key}, {labelRTPSalt, tc.salt}, {labelRTPAuth, tc.auth}} {
			want := unhex(t, x.want)
			if got := refPRF(t, mk, ms, x.label, len(want)); !bytes.Equal(got, want) {
				t.Errorf("%s label %d: %x, want %x", tc.name, x.label, got, want)
			}
		}
	}
	keystream := []struct{ name, key, salt, want string }{
		{"RFC 3711 B.2", "2B7E151628AED2A6ABF7158809CF4F3C", "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
			"E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0"},
		{"RFC 6188 7.1", "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98", "f0f1f2f3f4f5f6f7f8f9fafbfcfd",
			"92bdd28a93c3f52511c677d08b5515a49da71b2378a854f67050756ded165bac63c4868b7096d88421b563b8c94c9a31"},
	}
	for _, tc := range keystream {
		want := unhex(t, tc.want)
		got := refCTR(t, unhex(t, tc.key), cmIV(unhex(t, tc.salt), 0, 0), make([]byte, len(want)))
		if !bytes.Equal(got, want) {
			t.Errorf("%s keystream: %x, want %x", tc.name, got, want)
		}
	}
	gcm := []struct{ name, key, rtp, rtcp string }{
		{"RFC 7714 16.1.1/17.1.1 AES-128", rfc7714Key128,
			"8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
			"81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872 45d9eade 800005d4"},
		{"RFC 7714 16.2.1/17.2.1 AES-256", rfc7714Key256,
			"8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238 9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
			"81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50 a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c b26ac3be 800005d4"},
	}
	for _, tc := range gcm {
		s := refSession{key: unhex(t, tc.key), salt: unhex(t, rfc7714Salt)}
		k := refKeys{gcm: true, rtp: s, rtcp: s}
		if got, want := refSRTP(t, k, unhex(t, rfc7714RTP), 0), unhex(t, tc.rtp); !bytes.Equal(got, want) {
			t.Errorf("%s SRTP: %x, want %x", tc.name, got, want)
		}
		if got, want := refSRTCP(t, k, unhex(t, rfc7714RTCP), 0x5d4), unhex(t, tc.rtcp); !bytes.Equal(got, want) {
			t.Errorf("%s SRTCP: %x, want %x", tc.name, got, want)
		}
	}
}

// TestSRTPVectorsThroughSDES feeds published master keys to the relay's
// SDES constructor and compares its packets with the reference.
func TestSRTPVectorsThroughSDES(t *testing.T) {
	b3k, b3s := unhex(t, b3MasterKey), unhex(t, b3MasterSalt)
	k256, s256 := unhex(t, r6188Master), unhex(t, r6188Salt)
	cases := []struct {
		suite    sdes.Suite
		mk, ms   []byte
		ofVector string
	}{
		{sdes.AES128CMSHA1_80, b3k, b3s, "RFC 3711 B.3 master"},
		{sdes.AES128CMSHA1_32, b3k, b3s, "RFC 3711 B.3 master"},
		{sdes.AES256CMSHA1_80, k256, s256, "RFC 6188 7.2 master"},
		{sdes.AES256CMSHA1_32, k256, s256, "RFC 6188 7.2 master"},
		// RFC 7714 publishes no master key: the CM masters with the salt
		// cut to 96 bits.
		{sdes.AEADAES128GCM, b3k, b3s[:12], "RFC 3711 B.3 master, 96-bit salt"},
		{sdes.AEADAES256GCM, k256, s256[:12], "RFC 6188 7.2 master, 96-bit salt"},
	}
	for _, tc := range cases {
		t.Run(string(tc.suite), func(t *testing.T) {
			line := fmt.Sprintf("1 %s inline:%s|2^31", tc.suite, base64.StdEncoding.EncodeToString(append(append([]byte(nil), tc.mk...), tc.ms...)))
			c, err := sdes.Parse(line)
			if err != nil {
				t.Fatal(err)
			}
			lc, err := sdesCrypto(SDESKeys{Send: c, Recv: c})
			if err != nil {
				t.Fatal(err)
			}
			ref := deriveRef(t, tc.suite, tc.mk, tc.ms)
			if tc.suite == sdes.AES128CMSHA1_80 {
				// The reference's keys for this master are the RFC's own.
				if !bytes.Equal(ref.rtp.key, unhex(t, b3CipherKey)) || !bytes.Equal(ref.rtp.auth, unhex(t, b3AuthKey)) {
					t.Fatal("reference keys differ from RFC 3711 B.3")
				}
			}
			var h rtp.Header
			base := unhex(t, rfc7714RTP)
			// Across a sequence-number wrap: the rollover counter is in
			// the IV and the authenticated data.
			seqs := []struct {
				seq uint16
				roc uint32
			}{{0xf17b, 0}, {0xf17c, 0}, {0xfffe, 0}, {0xffff, 0}, {0x0000, 1}, {0x0001, 1}}
			var plains, protected [][]byte
			for _, s := range seqs {
				p := append([]byte(nil), base...)
				binary.BigEndian.PutUint16(p[2:], s.seq)
				got, err := lc.outRTP.encryptRTP(nil, p, &h)
				if err != nil {
					t.Fatal(err)
				}
				if want := refSRTP(t, ref, p, s.roc); !bytes.Equal(got, want) {
					t.Fatalf("seq %#04x: protect = %x, want %x", s.seq, got, want)
				}
				plains, protected = append(plains, p), append(protected, got)
			}
			for i, sp := range protected {
				got, err := lc.inRTP.decryptRTP(nil, sp, &h)
				if err != nil || !bytes.Equal(got, plains[i]) {
					t.Fatalf("unprotect seq %#04x: %v", seqs[i].seq, err)
				}
			}
			if _, err := lc.inRTP.decryptRTP(nil, protected[len(protected)-1], &h); err == nil {
				t.Error("replayed SRTP packet accepted")
			}
			p := append([]byte(nil), base...)
			binary.BigEndian.PutUint16(p[2:], 2)
			good := refSRTP(t, ref, p, 1)
			bad := append([]byte(nil), good...)
			bad[len(bad)-1] ^= 1
			if _, err := lc.inRTP.decryptRTP(nil, bad, &h); err == nil {
				t.Error("SRTP packet with a bad tag accepted")
			}
			if got, err := lc.inRTP.decryptRTP(nil, good, &h); err != nil || !bytes.Equal(got, p) {
				t.Errorf("reference packet not unprotected: %v", err)
			}

			rc := unhex(t, rfc7714RTCP)
			var first uint32
			for i := range 3 {
				got, err := lc.outRTCP.encryptRTCP(nil, rc)
				if err != nil {
					t.Fatal(err)
				}
				at := len(got) - 4
				if !ref.gcm {
					at -= 10
				}
				e := binary.BigEndian.Uint32(got[at:])
				if e>>31 != 1 {
					t.Fatal("SRTCP E flag not set")
				}
				idx := e &^ (1 << 31)
				if i == 0 {
					first = idx
				} else if idx != first+uint32(i) {
					t.Fatalf("SRTCP index %d after %d", idx, first)
				}
				if want := refSRTCP(t, ref, rc, idx); !bytes.Equal(got, want) {
					t.Fatalf("SRTCP index %d: protect = %x, want %x", idx, got, want)
				}
				plain, err := lc.inRTCP.decryptRTCP(nil, got)
				if err != nil || !bytes.Equal(plain, rc) {
					t.Fatalf("unprotect SRTCP index %d: %v", idx, err)
				}
				if _, err := lc.inRTCP.decryptRTCP(nil, got); err == nil {
					t.Fatalf("replayed SRTCP index %d accepted", idx)
				}
			}
		})
	}
}
