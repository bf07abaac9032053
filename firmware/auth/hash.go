package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id cost parameters.
type Params struct {
	Time      uint32 `json:"t"`
	MemoryKiB uint32 `json:"m"`
	Threads   uint8  `json:"p"`
}

// DefaultParams are sized for a 2-core appliance with 1+ GiB of RAM: 64 MiB
// per hash (above OWASP's 46 MiB, t=1 minimum), about 0.15 s on the CI
// machine; with DefaultConcurrency at most 128 MiB is spent on hashing
// however many logins arrive.
var DefaultParams = Params{Time: 1, MemoryKiB: 64 << 10, Threads: 1}

// DefaultConcurrency bounds concurrent hashes; DefaultQueue bounds waiters.
const (
	DefaultConcurrency = 2
	DefaultQueue       = 32

	saltLen = 16
	keyLen  = 32
	// Bounds for parameters read back from the store, so a tampered or
	// corrupt record cannot make one verification exhaust the box.
	maxTime      = 16
	maxMemoryKiB = 256 << 10
	maxThreads   = 8
)

// ErrBusy means too many logins are waiting for the hasher; the client
// should retry later. It is returned before any hashing happens.
var ErrBusy = errors.New("auth: too many concurrent logins")

// ErrHashFormat is returned for a malformed encoded hash.
var ErrHashFormat = errors.New("auth: malformed password hash")

// Hasher hashes and verifies passwords with argon2id under a concurrency bound.
type Hasher struct {
	params Params
	slots  chan struct{} // held while hashing
	queue  chan struct{} // held while waiting or hashing
}

// NewHasher returns a hasher with params, at most concurrency hashes at once
// and at most queue callers waiting.
func NewHasher(params Params, concurrency, queue int) *Hasher {
	if concurrency < 1 {
		concurrency = 1
	}
	if queue < concurrency {
		queue = concurrency
	}
	return &Hasher{params: params, slots: make(chan struct{}, concurrency), queue: make(chan struct{}, queue)}
}

func (h *Hasher) acquire(ctx context.Context) (func(), error) {
	select {
	case h.queue <- struct{}{}:
	default:
		return nil, ErrBusy
	}
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots; <-h.queue }, nil
	case <-ctx.Done():
		<-h.queue
		return nil, fmt.Errorf("auth: waiting for hasher: %w", ctx.Err())
	}
}

// Hash returns the PHC-style encoding of password's argon2id hash.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	release, err := h.acquire(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	sum := argon2.IDKey([]byte(password), salt, h.params.Time, h.params.MemoryKiB, h.params.Threads, keyLen)
	return encodeHash(h.params, salt, sum), nil
}

// Verify reports whether password matches encoded, and whether the hash
// should be recomputed with the current parameters.
func (h *Hasher) Verify(ctx context.Context, password, encoded string) (ok, rehash bool, err error) {
	p, salt, want, err := ParseHash(encoded)
	if err != nil {
		return false, false, err
	}
	release, err := h.acquire(ctx)
	if err != nil {
		return false, false, err
	}
	defer release()
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, p != h.params, nil
}

var b64 = base64.RawStdEncoding

func encodeHash(p Params, salt, sum []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(sum))
}

// ParseHash decodes "$argon2id$v=19$m=…,t=…,p=…$salt$hash", rejecting
// parameters outside the bounds this firmware is willing to compute.
func ParseHash(s string) (Params, []byte, []byte, error) {
	var p Params
	if len(s) > 256 {
		return p, nil, nil, ErrHashFormat
	}
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, ErrHashFormat
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return p, nil, nil, ErrHashFormat
	}
	vals := [3]uint64{}
	for i, name := range []string{"m=", "t=", "p="} {
		v, ok := strings.CutPrefix(kv[i], name)
		if !ok {
			return p, nil, nil, ErrHashFormat
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, nil, nil, ErrHashFormat
		}
		vals[i] = n
	}
	p = Params{MemoryKiB: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(min(vals[2], 255))}
	if p.Time < 1 || p.Time > maxTime || p.Threads < 1 || p.Threads > maxThreads || vals[2] > maxThreads ||
		p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxMemoryKiB {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters out of bounds", ErrHashFormat)
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 {
		return Params{}, nil, nil, ErrHashFormat
	}
	sum, err := b64.DecodeString(parts[5])
	if err != nil || len(sum) < 16 || len(sum) > 64 {
		return Params{}, nil, nil, ErrHashFormat
	}
	return p, salt, sum, nil
}
