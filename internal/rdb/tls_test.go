package rdb

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// tlsServer answers PING over TLS with a fresh self-signed certificate for
// 127.0.0.1 and returns its address and the certificate.
func tlsServer(t *testing.T) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					if _, err := readCommand(br); err != nil {
						return
					}
					conn.Write([]byte("+PONG\r\n"))
				}
			}()
		}
	}()
	return ln.Addr().String(), cert
}

func TestDialTLS(t *testing.T) {
	addr, cert := tlsServer(t)
	o, err := ParseURL("rediss://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	o.Timeout = 5 * time.Second
	if _, err := Dial(context.Background(), o); err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("unknown CA accepted: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	o.TLS.RootCAs = pool
	c, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Do("PING"); err != nil || v != "PONG" {
		t.Errorf("PING over TLS: %v %v", v, err)
	}
	o.TLS = &tls.Config{InsecureSkipVerify: true}
	c2, err := Dial(context.Background(), o)
	if err != nil {
		t.Fatalf("insecure: %v", err)
	}
	c2.Close()
}
