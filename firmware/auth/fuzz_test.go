package auth

import (
	"testing"
)

// FuzzParseHash: stored hashes come back through ParseHash; whatever it
// accepts is within the bounds this firmware is willing to compute.
func FuzzParseHash(f *testing.F) {
	f.Add("$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$$")
	f.Add("$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdA$aGFzaA")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, sum, err := ParseHash(s)
		if err != nil {
			return
		}
		if p.Time < 1 || p.Time > maxTime || p.MemoryKiB > maxMemoryKiB || p.Threads < 1 || p.Threads > maxThreads ||
			len(salt) < 8 || len(sum) < 16 {
			t.Fatalf("accepted out-of-bounds hash %q: %+v", s, p)
		}
	})
}

// FuzzCheckPassword: the policy never panics and never accepts empty,
// short or over-long input.
func FuzzCheckPassword(f *testing.F) {
	for _, s := range []string{"", "a", "correcthorsebattery", "Grün-Bäume-7-Höfe!", "\xff\xfe"} {
		f.Add("alice", s)
	}
	p := DefaultPolicy()
	f.Fuzz(func(t *testing.T, user, pw string) {
		if CheckPassword(p, user, pw) == nil && (len(pw) == 0 || len(pw) > MaxPasswordBytes || Score(pw) < scoreHigh) {
			t.Fatalf("accepted %q", pw)
		}
	})
}

// FuzzRecoveryHash normalises user input without panicking.
func FuzzRecoveryHash(f *testing.F) {
	f.Add("alice", "abcd-efgh-ijkl")
	f.Fuzz(func(t *testing.T, user, code string) {
		if len(recoveryHash(user, code)) != 64 {
			t.Fatal("hash length")
		}
	})
}
