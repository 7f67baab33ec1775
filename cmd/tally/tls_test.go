package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

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
	addr, admin := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	env := &environment{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	go func() {
		done <- run(ctx, env, []string{"ingest", "--kafka-brokers", strings.Join(brokers, ","), "--topic-usage", usage, "--topic-accounts", accountsTopic,
			"--http-addr", addr, "--admin-addr", admin, "--replica-check-interval", "0", "--api-keys", "@" + keys,
			"--tls-cert", server.CertFile, "--tls-key", server.KeyFile, "--tls-client-ca", gateways.CertFile,
			"--admin-tls-cert", server.CertFile, "--admin-tls-key", server.KeyFile})
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

	consoleKey := filepath.Join(t.TempDir(), "console-key")
	_ = os.WriteFile(consoleKey, []byte("console-key-0123456789\n"), 0o600)
	// The admin server speaks TLS too (no client certificate asked for there): a scraper that
	// trusts the CA reads /metrics; plain HTTP gets nothing useful.
	if resp, err := client(tlsfiles.Client{CAFile: ca.CertFile}).Get("https://" + admin + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics over TLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, err := http.Get("http://" + admin + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("/metrics answered plain HTTP")
		}
	}

	activate := []string{"accounts", "activate", "--ingest-url", "https://" + addr, "--api-key", "@" + consoleKey, "--account", "acme",
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

// The roles reach a Kafka that takes only SASL over TLS with the --kafka-sasl-* and
// --kafka-tls-* flags (the password from a file, not the command line): tally check says so,
// and refuses a wrong password; tally ingest acknowledges an event only once that Kafka has it.
func TestRolesReachKafkaOverSASLAndTLS(t *testing.T) {
	b := testinfra.StartSecureBroker(t)
	dir := t.TempDir()
	password, wrong := filepath.Join(dir, "password"), filepath.Join(dir, "wrong")
	_ = os.WriteFile(password, []byte(b.SASLPassword+"\n"), 0o600)
	_ = os.WriteFile(wrong, []byte("guess\n"), 0o600)
	secure := func(passwordFile string) []string {
		return []string{"--kafka-brokers", strings.Join(b.SecureBrokers(), ","), "--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", b.SASLUser,
			"--kafka-sasl-password", "@" + passwordFile, "--kafka-tls-ca", b.CA.CertFile}
	}
	if code, out, errOut := tally(t, append([]string{"check", "--skip-clickhouse", "--timeout", "20s"}, secure(password)...)...); code != 0 {
		t.Fatalf("tally check over SASL_SSL: %d %s %s", code, out, errOut)
	}
	if code, out, _ := tally(t, append([]string{"check", "--skip-clickhouse", "--timeout", "10s"}, secure(wrong)...)...); code != 1 || !strings.Contains(out, "FAIL") {
		t.Fatalf("tally check with a wrong password: %d %s", code, out)
	}

	m, _ := kafkax.SASL("scram-sha-256", b.SASLUser, b.SASLPassword)
	trusting, _ := tlsfiles.Client{CAFile: b.CA.CertFile}.Config()
	cluster := kafkax.Cluster{Brokers: b.SecureBrokers(), Security: kafkax.Security{SASL: m, TLS: trusting}}
	usage, accountsTopic := testinfra.UniqueName(t, "usage"), testinfra.UniqueName(t, "accounts")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := kafkax.CreateTopics(ctx, cluster, kafkax.TopicSpec{Name: usage, Partitions: 1}, kafkax.TopicSpec{Name: accountsTopic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	addr := testinfra.FreeAddr(t)
	done := make(chan int, 1)
	env := &environment{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, lookupEnv: func(string) (string, bool) { return "", false }}
	go func() {
		done <- run(ctx, env, append([]string{"ingest", "--topic-usage", usage, "--topic-accounts", accountsTopic, "--http-addr", addr,
			"--admin-addr", testinfra.FreeAddr(t), "--replica-check-interval", "0"}, secure(password)...))
	}()
	defer func() {
		cancel()
		<-done
	}()
	event := fmt.Sprintf(`{"specversion":"1.0","id":"sasl-1","source":"gw","type":"tally.usage.v1","time":%q,"data":{"account":"acme","service":"image-tagging","calls":3}}`,
		time.Now().UTC().Format(time.RFC3339))
	var status int
	for deadline := time.Now().Add(30 * time.Second); status != http.StatusOK && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Post("http://"+addr+"/v1/events", "application/cloudevents+json", strings.NewReader(event)); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
	}
	if status != http.StatusOK {
		t.Fatalf("ingest over SASL_SSL answered %d", status)
	}
	var got []string
	if err := kafkax.ReadAll(ctx, cluster, usage, func(m kafka.Message) error { got = append(got, string(m.Key)); return nil }); err != nil || len(got) != 1 || got[0] != "acme" {
		t.Fatalf("the usage topic holds %v (%v)", got, err)
	}
}
