package backup

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

var timeZero time.Time

// s3PartSize bounds what an upload holds in memory (one part per thread).
const (
	s3PartSize = 16 << 20
	s3Threads  = 2
)

type s3Remote struct {
	c       *minio.Client
	bucket  string
	prefix  string
	maxList int
}

func dialS3(ctx context.Context, t target, maxList int) (remote, error) {
	port := t.cfg.Port
	if port == 0 {
		port = 443
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.cfg.CACert != "" {
		pool, err := parseCA(t.cfg.CACert)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	} else {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("the box's trust store: %w", err)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		// No proxy from the environment: the target is what the admin named.
		DialContext:           (&net.Dialer{Timeout: remoteTimeout}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   remoteTimeout,
		ResponseHeaderTimeout: 5 * time.Minute,
		MaxIdleConnsPerHost:   s3Threads,
		IdleConnTimeout:       time.Minute,
		ForceAttemptHTTP2:     true,
	}
	c, err := minio.New(net.JoinHostPort(t.cfg.Host, strconv.Itoa(port)), &minio.Options{
		Creds:     credentials.NewStaticV4(t.cfg.User, t.sec.Password, ""),
		Secure:    true,
		Region:    t.cfg.Region,
		Transport: tr,
		// A few retries: a target that is down is tried again at the next
		// schedule, not in a long back-off here.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	prefix := strings.Trim(t.cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &s3Remote{c: c, bucket: t.cfg.Bucket, prefix: prefix, maxList: maxList}, nil
}

func (r *s3Remote) Close() error { return nil }

// put streams f in parts of s3PartSize (an object appears whole on S3
// only when its upload completes).
func (r *s3Remote) put(ctx context.Context, name string, f *os.File, size int64) error {
	_, err := r.c.PutObject(ctx, r.bucket, r.prefix+name, f, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream", PartSize: s3PartSize, NumThreads: s3Threads})
	return err
}

func (r *s3Remote) list(ctx context.Context) ([]File, error) {
	var ns []string
	var ss []int64
	ctx, cancel := context.WithCancel(ctx) // stops the listing if it ends early
	defer cancel()
	n := 0
	for o := range r.c.ListObjects(ctx, r.bucket, minio.ListObjectsOptions{Prefix: r.prefix}) {
		if o.Err != nil {
			return nil, o.Err
		}
		if n++; n > r.maxList {
			return nil, errTooManyFiles(r.maxList)
		}
		n := strings.TrimPrefix(o.Key, r.prefix)
		if strings.Contains(n, "/") {
			continue
		}
		ns = append(ns, n)
		ss = append(ss, o.Size)
	}
	return remoteFiles(ns, ss), nil
}

func (r *s3Remote) get(ctx context.Context, name string) (readCloser, error) {
	o, err := r.c.GetObject(ctx, r.bucket, r.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	// GetObject is lazy: Stat makes the request, so a missing object is
	// reported here, not as a read error later.
	if _, err := o.Stat(); err != nil {
		o.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		return nil, err
	}
	return o, nil
}

// sweep has nothing to do: an S3 object appears only when its upload
// completes, and a failed multipart upload is aborted by the client.
func (r *s3Remote) sweep(context.Context, string) error { return nil }

func (r *s3Remote) remove(ctx context.Context, name string) error {
	return r.c.RemoveObject(ctx, r.bucket, r.prefix+name, minio.RemoveObjectOptions{})
}

func (r *s3Remote) probe(ctx context.Context) error {
	ok, err := r.c.BucketExists(ctx, r.bucket)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("bucket %q does not exist", r.bucket)
	}
	key := r.prefix + tmpPrefix + "probe-" + randHex()
	body := []byte("edgepbx target test\n")
	if _, err := r.c.PutObject(ctx, r.bucket, key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("write a test object: %w", err)
	}
	return r.c.RemoveObject(ctx, r.bucket, key, minio.RemoveObjectOptions{})
}

// explain turns a target's error into words for the admin.
func explain(t target, err error) string {
	var u *unpinnedError
	var hk *hostKeyError
	var ne net.Error
	var ue *tls.CertificateVerificationError
	var oe *net.OpError
	msg := err.Error()
	switch {
	case errors.As(err, &u), errors.As(err, &hk):
		return msg
	case errors.Is(err, ErrBadRequest), errors.Is(err, ErrNotFound), errors.Is(err, ErrTooLarge):
		return msg
	case strings.Contains(msg, "ssh: unable to authenticate"):
		return fmt.Sprintf("the SFTP server refused user %q with the stored password or key", t.cfg.User)
	case errors.As(err, &ue) || strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:"):
		return "the server's TLS certificate is not trusted (" + msg + "); if it is signed by a private CA, upload that CA certificate"
	case errors.As(err, &oe) && oe.Op == "dial":
		return fmt.Sprintf("cannot connect to %s: %v", where(t), oe.Err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("%s did not answer in time", where(t))
	}
	switch minio.ToErrorResponse(err).Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidSecretKey":
		return fmt.Sprintf("the S3 server refused access key %q with the stored secret (%s)", t.cfg.User, minio.ToErrorResponse(err).Code)
	case "NoSuchBucket":
		return fmt.Sprintf("bucket %q does not exist", t.cfg.Bucket)
	}
	if errors.Is(err, os.ErrPermission) {
		return "permission denied on the target directory: " + msg
	}
	if errors.Is(err, os.ErrNotExist) {
		return "the directory does not exist on the server: " + msg
	}
	return msg
}
