// Package syslogtest is a remote syslog collector on loopback for tests:
// TCP or TLS (its own CA, certificate for 127.0.0.1), RFC 5425/6587
// octet-counting frames read strictly.
package syslogtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MaxFrame bounds one message; a larger or malformed length is reported as
// a message starting "BAD FRAME" and ends that connection.
const MaxFrame = 8192

// Collector receives syslog messages, one per frame, on Msgs.
type Collector struct {
	Addr  string      // host:port
	CAPEM string      // the CA a TLS collector's certificate chains to ("" for TCP)
	Msgs  chan string // each frame's message
}

// Start listens on 127.0.0.1 until the test ends; withTLS serves TLS.
func Start(tb testing.TB, withTLS bool) *Collector {
	tb.Helper()
	c := &Collector{Msgs: make(chan string, 1000)}
	var ln net.Listener
	var err error
	if withTLS {
		var cert tls.Certificate
		cert, c.CAPEM = certificate(tb)
		ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	c.Addr = ln.Addr().String()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go c.read(conn)
		}
	}()
	return c
}

func (c *Collector) read(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		ls, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(ls, " "))
		if err != nil || n <= 0 || n > MaxFrame {
			c.Msgs <- "BAD FRAME " + ls
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return
		}
		c.Msgs <- string(b)
	}
}

// Wait returns the next message containing s, skipping others.
func (c *Collector) Wait(tb testing.TB, s string) string {
	tb.Helper()
	deadline := time.After(30 * time.Second) // a hang, not a performance bound
	for {
		select {
		case m := <-c.Msgs:
			if strings.Contains(m, s) {
				return m
			}
		case <-deadline:
			tb.Fatalf("no syslog message with %q", s)
			return ""
		}
	}
}

// certificate is a fresh CA and a server certificate for 127.0.0.1.
func certificate(tb testing.TB) (tls.Certificate, string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "syslogtest CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	lT := &x509.Certificate{SerialNumber: big.NewInt(2), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, lT, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
}
