package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tally ingest with --tls-cert, --tls-key and --tls-client-ca serves HTTPS only, and only to
// clients showing a certificate of the client CA; tally accounts reaches it with --tls-ca and
// its own certificate; SIGHUP rotates the server's certificate without a restart. Real Kafka.
func TestIngestServesMutualTLS(t *testing.T) {
	caught := make(chan os.Signal, 16) // a SIGHUP before the role listens must not end the test
	signal.Notify(caught, syscall.SIGHUP)
	defer signal.Stop(caught)

	brokers, usage := testinfra.Topic(t, 1, nil)
	_, accountsTopic := testinfra.Topic(t, 1, nil)
	ca := testinfra.NewCA(t, "tally")
	server := ca.Issue(t, "ingest", "127.0.0.1")
	gateways := testinfra.NewCA(t, "gateways")
	gw := gateways.Issue(t, "gw1")
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("gw1=gateway-key-0123456789\nconsole=console-key-0123456789;console\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	env := &environment{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	go func() {
		done <- run(ctx, env, []string{"ingest", "--kafka-brokers", strings.Join(brokers, ","), "--topic-usage", usage, "--topic-accounts", accountsTopic,
			"--http-addr", addr, "--admin-addr", freeAddr(t), "--replica-check-interval", "0", "--api-keys", "@" + keys,
			"--tls-cert", server.CertFile, "--tls-key", server.KeyFile, "--tls-client-ca", gateways.CertFile})
	}()
	defer func() {
		cancel()
		<-done
	}()

	client := func(c tlsfiles.Client) *http.Client {
		cfg, err := c.Config()
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	post := func(c *http.Client, id string) (*http.Response, error) {
		event := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"gw","type":"tally.usage.v1","time":%q,"data":{"account":"acme","service":"image-tagging","calls":1}}`,
			id, time.Now().UTC().Format(time.RFC3339))
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/events", strings.NewReader(event))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		req.Header.Set("Authorization", "Bearer gateway-key-0123456789")
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}
	gateway := client(tlsfiles.Client{CAFile: ca.CertFile, CertFile: gw.CertFile, KeyFile: gw.KeyFile})
	var resp *http.Response
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err = post(gateway, "e1"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a gateway with its certificate and key: %v %v", resp, err)
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Cmp(server.Serial) != 0 {
		t.Fatal("not served with the --tls-cert certificate")
	}
	if _, err := post(client(tlsfiles.Client{CAFile: ca.CertFile}), "e2"); err == nil {
		t.Fatal("a client without a certificate got an answer")
	}
	if resp, err := http.Post("http://"+addr+"/v1/events", "application/cloudevents+json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP: %d", resp.StatusCode)
		}
	}

	activate := []string{"accounts", "activate", "--ingest-url", "https://" + addr, "--api-key", "console-key-0123456789", "--account", "acme",
		"--service", "image-tagging", "--tls-ca", ca.CertFile}
	if code, _, errOut := tally(t, append(activate, "--tls-client-cert", gw.CertFile, "--tls-client-key", gw.KeyFile)...); code != 0 {
		t.Fatalf("tally accounts over mutual TLS: %d %s", code, errOut)
	}
	if code, _, _ := tally(t, activate...); code == 0 {
		t.Fatal("tally accounts without a client certificate got through")
	}

	rotated := ca.Issue(t, "ingest", "127.0.0.1") // over the files --tls-cert and --tls-key name
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
		conn, err := tls.Dial("tcp", addr, gateway.Transport.(*http.Transport).TLSClientConfig)
		if err == nil {
			serial := conn.ConnectionState().PeerCertificates[0].SerialNumber
			conn.Close()
			if serial.Cmp(rotated.Serial) == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP never rotated the certificate (last: %v)", err)
		}
	}
}
