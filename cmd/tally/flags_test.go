package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/internal/testinfra"
)

// Connection flags become the connection settings they say: TLS from an https:// URL or
// --clickhouse-tls, CAs from files, secrets from @FILE (a password on the command line shows in
// /proc), SASL only with its user and password, and a mistake named by its flag.
func TestSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s3cret-from-a-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testinfra.NewCA(t, "flags")
	parse := func(args ...string) (kafkaFlags, clickhouseFlags) {
		t.Helper()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		kf, cf := addKafkaFlags(fs), addClickHouseFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return kf, cf
	}

	_, cf := parse("--clickhouse-http", "https://ch.internal:8443", "--clickhouse-password", "@"+secret, "--clickhouse-tls-ca", ca.CertFile)
	cfg, err := cf.configFor("http")
	if err != nil || cfg.Protocol != clickhouse.HTTP || cfg.Addr != "ch.internal:8443" || cfg.TLS == nil || cfg.TLS.RootCAs == nil || cfg.Password != "s3cret-from-a-file" {
		t.Fatalf("https with a CA and a password file: %+v %v", cfg, err)
	}
	if cfg, err := cf.configFor("native"); err != nil || cfg.TLS == nil {
		t.Fatalf("native with a CA file: TLS %v, %v", cfg.TLS, err)
	}
	_, cf = parse()
	if cfg, err := cf.configFor("native"); err != nil || cfg.TLS != nil || cfg.Password != "" {
		t.Fatalf("the defaults: %+v %v", cfg, err)
	}
	_, cf = parse("--clickhouse-tls")
	if cfg, _ := cf.configFor("native"); cfg.TLS == nil || cfg.TLS.RootCAs != nil {
		t.Fatalf("--clickhouse-tls: want TLS with the system's CAs, got %+v", cfg.TLS)
	}
	_, cf = parse("--clickhouse-password", "@"+filepath.Join(dir, "missing"))
	if _, err := cf.config(); err == nil || !strings.Contains(err.Error(), "--clickhouse-password") {
		t.Fatalf("a missing password file: %v", err)
	}

	kf, _ := parse("--kafka-brokers", "k1:9093,k2:9093", "--kafka-sasl-mechanism", "scram-sha-512", "--kafka-sasl-user", "tally", "--kafka-sasl-password", "@"+secret,
		"--kafka-tls-ca", ca.CertFile)
	kc, err := kf.cluster()
	if err != nil || len(kc.Brokers) != 2 || kc.Security.SASL == nil || kc.Security.SASL.Name() != "SCRAM-SHA-512" || kc.Security.TLS == nil || kc.Security.TLS.RootCAs == nil {
		t.Fatalf("SCRAM over TLS: %+v %v", kc, err)
	}
	plain, _ := parse()
	if kc, err := plain.cluster(); err != nil || kc.Security.SASL != nil || kc.Security.TLS != nil {
		t.Fatalf("the defaults: plaintext, got %+v %v", kc.Security, err)
	}
	for _, bad := range [][]string{
		{"--kafka-sasl-mechanism", "scram-sha-256", "--kafka-sasl-user", "tally"},
		{"--kafka-sasl-mechanism", "gssapi", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
		{"--kafka-tls-client-cert", ca.CertFile},
	} {
		kf, _ := parse(bad...)
		if _, err := kf.cluster(); err == nil || !strings.Contains(err.Error(), "--kafka-") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// A secret in the clear on the command line is refused with where to put it instead; the same
// secret from its TALLY_* variable or @FILE is taken, and a key list of hashes may stay inline.
func TestSecretsAreRefusedOnTheCommandLine(t *testing.T) {
	for _, args := range [][]string{
		{"check", "--clickhouse-password", "hunter2-hunter2", "--skip-clickhouse"},
		{"check", "--kafka-sasl-password=hunter2-hunter2"},
		{"ingest", "--api-keys", "gw=0123456789abcdef0123"},
		{"ingest", "--api-keys", "gw=sha256:" + strings.Repeat("ab", 32) + ",gw2=0123456789abcdef0123"},
		{"aggregate", "--query-keys", "acme=0123456789abcdef0123;accounts=acme"},
		{"accounts", "show", "--account", "acme", "--query-key", "0123456789abcdef0123"},
	} {
		code, _, errOut := tally(t, args...)
		if code == 0 || !strings.Contains(errOut, "readable by anyone on this machine") || strings.Contains(errOut, "hunter2") || strings.Contains(errOut, "0123456789abcdef0123") {
			t.Errorf("%v: exit %d, %s", args, code, errOut)
		}
	}
	hashes := "gw=sha256:" + strings.Repeat("ab", 32) + ";accounts=acme"
	if exposedSecret("api-keys", hashes) || exposedSecret("clickhouse-password", "@/run/secrets/ch") || exposedSecret("kafka-brokers", "k:9092") {
		t.Error("a hash list, a @FILE or a broker list counted as a secret in the clear")
	}
	var out, errOut strings.Builder
	env := &environment{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut, lookupEnv: func(name string) (string, bool) {
		if name == "TALLY_KAFKA_SASL_PASSWORD" {
			return "from-the-environment", true
		}
		return "", false
	}}
	fs := newFlags("t")
	kf := addKafkaFlags(fs)
	if err := env.parse(fs, nil); err != nil || *kf.password != "from-the-environment" {
		t.Fatalf("the password from TALLY_KAFKA_SASL_PASSWORD: %q %v", *kf.password, err)
	}
}
