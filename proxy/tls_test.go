package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenhub/tokenhub/internal/upstreamtest"
)

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 named cn,
// and its key, as PEM to certFile and keyFile, and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	der, priv, cert := upstreamtest.SelfSigned(t, cn)
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestTLS serves HTTPS on both listeners from the configured pair, then
// renews the pair in place and reloads: new connections get the new
// certificate, and a client trusting only it connects.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writeCert(t, certFile, keyFile, "first")
	n := startFileNode(t, "admin: {listen: 127.0.0.1:0}\ntls: {cert_file: "+certFile+", key_file: "+keyFile+"}\n"+reloadModels)

	// trusting returns a client that trusts only cert and opens a new
	// connection for every request.
	trusting := func(cert *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	served := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url + "/healthz")
		if err != nil {
			t.Fatalf("GET %s/healthz: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil {
			t.Fatalf("GET %s/healthz: %d, tls %v", url, resp.StatusCode, resp.TLS != nil)
		}
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	n.client = trusting(first)
	if got := served(n.client, n.url); got != "first" {
		t.Fatalf("main listener served %q, want first", got)
	}
	if got := served(n.client, n.adminURL); got != "first" {
		t.Fatalf("admin listener served %q, want first", got)
	}
	if _, err := http.Get("http://" + strings.TrimPrefix(n.url, "https://") + "/healthz"); err == nil {
		t.Fatal("plain HTTP answered on a TLS listener")
	}

	second := writeCert(t, certFile, keyFile, "second")
	status, b := n.call(t, "POST", n.adminURL+"/admin/reload", testAdminKey, "")
	if status != 200 || !strings.Contains(string(b), `"tls_reloaded":true`) {
		t.Fatalf("reload: %d %s", status, b)
	}
	n.client = trusting(second)
	if got := served(n.client, n.url); got != "second" {
		t.Fatalf("after the reload the main listener served %q, want second", got)
	}
	if got := served(n.client, n.adminURL); got != "second" {
		t.Fatalf("after the reload the admin listener served %q, want second", got)
	}

	// Streams over TLS: the relay unwraps the hijacked TLS connection, and
	// the connection serves the next stream after the first.
	k := n.key(t)
	keepAlive := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1,
		TLSClientConfig: &tls.Config{RootCAs: n.client.Transport.(*http.Transport).TLSClientConfig.RootCAs, MinVersion: tls.VersionTLS12}}}
	for i := range 2 {
		status, b := (&fileNode{gateway: n.gateway, client: keepAlive}).call(t, "POST", n.url+"/v1/chat/completions", k.Key,
			`{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
		if status != 200 || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("stream %d over TLS: %d %q", i, status, b)
		}
	}

	// A broken pair is refused and the current one stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	status, b = n.call(t, "POST", n.adminURL+"/admin/reload", testAdminKey, "")
	if status != 400 || !strings.Contains(string(b), "tls: cert_file and key_file are not a certificate and its key") {
		t.Fatalf("reload with a broken key: %d %s", status, b)
	}
	if got := served(n.client, n.url); got != "second" {
		t.Fatalf("after a refused reload the main listener served %q, want second", got)
	}
}
