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
	"sync"
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

	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// Start listens on 127.0.0.1 until the test ends; withTLS serves TLS.
func Start(tb testing.TB, withTLS bool) *Collector {
	tb.Helper()
	return StartAt(tb, "127.0.0.1:0", withTLS)
}

// StartAt listens on addr (a collector that comes back on the address of
// one that was closed).
func StartAt(tb testing.TB, addr string, withTLS bool) *Collector {
	tb.Helper()
	c := &Collector{Msgs: make(chan string, 1000), conns: map[net.Conn]bool{}}
	var ln net.Listener
	var err error
	if withTLS {
		var cert tls.Certificate
		cert, c.CAPEM = certificate(tb)
		ln, err = tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}})
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		tb.Fatal(err)
	}
	c.ln = ln
	tb.Cleanup(c.Close)
	c.Addr = ln.Addr().String()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				conn.Close()
				return
			}
			c.conns[conn] = true
			c.mu.Unlock()
			go c.read(conn)
		}
	}()
	return c
}

// Close stops listening and ends every connection (the collector goes
// down).
func (c *Collector) Close() {
	c.ln.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for conn := range c.conns {
		conn.Close()
	}
}

func (c *Collector) read(conn net.Conn) {
	defer func() {
		conn.Close()
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
	}()
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
