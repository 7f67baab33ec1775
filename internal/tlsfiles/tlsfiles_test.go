package tlsfiles_test

import (
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

// serve runs an HTTP server on certs as the roles do (http.Server.ServeTLS with the config),
// and returns its https base URL.
func serve(t *testing.T, certs *tlsfiles.ServerCerts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: certs.Config(), ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(r.Proto)) })}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

func client(t *testing.T, c tlsfiles.Client) *http.Client {
	t.Helper()
	cfg, err := c.Config()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// get answers the protocol the server saw and the serial of the certificate it showed.
func get(c *http.Client, url string) (string, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body := make([]byte, 64)
	n, _ := resp.Body.Read(body)
	return string(body[:n]), resp.TLS.PeerCertificates[0].SerialNumber.String(), nil
}

// A server with a certificate serves HTTPS (HTTP/2 too) to a client that trusts its CA, and
// nothing to one that does not; a reload serves the new certificate from the next connection
// on, and a reload of a broken file keeps the one held.
func TestServerCertificatesAreServedAndReloaded(t *testing.T) {
	ca := testinfra.NewCA(t, "tally-test")
	first := ca.Issue(t, "server", "127.0.0.1", "localhost")
	certs, err := tlsfiles.Server{CertFile: first.CertFile, KeyFile: first.KeyFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, certs)
	trusting := client(t, tlsfiles.Client{CAFile: ca.CertFile})
	proto, serial, err := get(trusting, url)
	if err != nil || proto != "HTTP/2.0" || serial != first.Serial.String() {
		t.Fatalf("a trusting client: %q %s %v", proto, serial, err)
	}
	if _, _, err := get(client(t, tlsfiles.Client{CAFile: testinfra.NewCA(t, "other").CertFile}), url); err == nil {
		t.Fatal("a client trusting another CA got an answer")
	}
	if resp, err := http.Get("http" + strings.TrimPrefix(url, "https") + "/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS port: %d", resp.StatusCode)
		}
	}

	second := ca.Issue(t, "server", "127.0.0.1") // written over the first's files
	if err := certs.Reload(); err != nil {
		t.Fatal(err)
	}
	trusting.CloseIdleConnections()
	if _, serial, err := get(trusting, url); err != nil || serial != second.Serial.String() {
		t.Fatalf("after the reload: %s %v; want serial %s", serial, err, second.Serial)
	}
	if err := os.WriteFile(second.KeyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := certs.Reload(); err == nil || !strings.Contains(err.Error(), second.KeyFile) {
		t.Fatalf("a broken key file: %v", err)
	}
	trusting.CloseIdleConnections()
	if _, serial, err := get(trusting, url); err != nil || serial != second.Serial.String() {
		t.Fatalf("after a failed reload: %s %v", serial, err)
	}
}

// With client CAs, only a client showing a certificate one of them signed gets through.
func TestClientCertificatesAreRequiredWithClientCAs(t *testing.T) {
	ca := testinfra.NewCA(t, "servers")
	server := ca.Issue(t, "server", "127.0.0.1")
	gateways := testinfra.NewCA(t, "gateways")
	gw := gateways.Issue(t, "gw1")
	stranger := testinfra.NewCA(t, "strangers").Issue(t, "gw2")
	certs, err := tlsfiles.Server{CertFile: server.CertFile, KeyFile: server.KeyFile, ClientCAFile: gateways.CertFile}.Load()
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, certs)
	if _, _, err := get(client(t, tlsfiles.Client{CAFile: ca.CertFile, CertFile: gw.CertFile, KeyFile: gw.KeyFile}), url); err != nil {
		t.Fatalf("a gateway's certificate: %v", err)
	}
	for name, c := range map[string]tlsfiles.Client{
		"no certificate":           {CAFile: ca.CertFile},
		"a certificate of another": {CAFile: ca.CertFile, CertFile: stranger.CertFile, KeyFile: stranger.KeyFile},
	} {
		if _, _, err := get(client(t, c), url); err == nil {
			t.Errorf("%s got through", name)
		}
	}
}

// Configuration mistakes are named.
func TestMisconfigurationIsNamed(t *testing.T) {
	if err := (tlsfiles.Server{CertFile: "c.pem"}).Validate(); err == nil || !strings.Contains(err.Error(), "key file is missing") {
		t.Fatalf("a certificate without a key: %v", err)
	}
	if _, err := (tlsfiles.Client{CertFile: "c.pem"}).Config(); err == nil {
		t.Fatal("a client certificate without its key")
	}
	if _, err := (tlsfiles.Server{CertFile: "missing.pem", KeyFile: "missing-key.pem"}).Load(); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing files: %v", err)
	}
	empty := t.TempDir() + "/empty.pem"
	_ = os.WriteFile(empty, nil, 0o600)
	if _, err := (tlsfiles.Client{CAFile: empty}).Config(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("an empty CA file: %v", err)
	}
}
