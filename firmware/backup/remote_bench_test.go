package backup

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// BenchmarkRemoteTransfer times the copy of one backup-sized file to a
// target and back: OpenSSH over SFTP and versitygw over HTTPS, both on
// loopback, so the figures are the box's side (SSH or TLS, SigV4, disk),
// not a network's. The size is EDGEPBX_BENCH_MIB (default 397 MiB, the
// backup of 1,000 extensions and 1,000,000 CDRs in BenchmarkBackup); random
// bytes stand for it (age output does not compress).
func BenchmarkRemoteTransfer(b *testing.B) {
	mib := 397
	if v := os.Getenv("EDGEPBX_BENCH_MIB"); v != "" {
		mib, _ = strconv.Atoi(v)
	}
	size := int64(mib) << 20
	ctx := context.Background()
	for _, kind := range TargetKinds {
		b.Run(kind, func(b *testing.B) {
			bx := newBox(b, "BENCHR")
			var cfg TargetConfig
			var sec TargetSecrets
			switch kind {
			case TargetSFTP:
				srv := startSFTP(b)
				cfg = TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.user, Path: "/upload", HostKey: srv.hostKey}
				sec = TargetSecrets{Password: srv.password}
			case TargetS3:
				srv := startS3(b)
				mc, err := minio.New(srv.host+":"+itoa(srv.port), &minio.Options{Creds: credentials.NewStaticV4(srv.access, srv.secret, ""),
					Secure: true, Transport: mustTransport(b, srv.ca)})
				if err != nil {
					b.Fatal(err)
				}
				if err := mc.MakeBucket(ctx, "bench", minio.MakeBucketOptions{}); err != nil {
					b.Fatal(err)
				}
				cfg = TargetConfig{Enabled: true, Host: srv.host, Port: srv.port, User: srv.access, Bucket: "bench",
					Region: "us-east-1", CACert: srv.ca}
				sec = TargetSecrets{Password: srv.secret}
			}
			if err := bx.backup.SetTarget(kind, cfg, sec, admin); err != nil {
				b.Fatal(err)
			}
			name := fmt.Sprintf("edgepbx-BENCHR-manual-%s.age", bx.clk.Now().UTC().Format(fileTime))
			writeRandom(b, filepath.Join(bx.backup.cfg.Dir, name), size)
			t, err := bx.backup.target(kind)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("push", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					b.StopTimer()
					r, err := bx.backup.dial(ctx, t)
					if err != nil {
						b.Fatal(err)
					}
					_ = r.remove(ctx, name) // absent on the first round
					r.Close()
					b.StartTimer()
					if err := bx.backup.Push(ctx, admin); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("fetch", func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					id, err := bx.backup.RemoteFetch(ctx, kind, name, admin)
					if err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					fi, err := os.Stat(filepath.Join(bx.backup.cfg.Dir, "."+id))
					if err != nil || fi.Size() != size {
						b.Fatalf("fetched %v %v", fi, err)
					}
					os.Remove(filepath.Join(bx.backup.cfg.Dir, "."+id))
					b.StartTimer()
				}
			})
		})
	}
}

func writeRandom(b *testing.B, path string, size int64) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var seed [32]byte
	if _, err := io.CopyN(f, rand.NewChaCha8(seed), size); err != nil {
		b.Fatal(err)
	}
}
