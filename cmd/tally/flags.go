package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/tlsfiles"
)

// Shared settings of the roles, with the defaults of SPEC §7.

// newFlags starts a subcommand's flag set with --config, the JSON file every command reads.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("config", "", "JSON config file: flag names as keys (flags and TALLY_* variables win)")
	return fs
}

type kafkaFlags struct {
	brokers                            *string
	mechanism, user, password          *string
	tls                                *bool
	tlsCA, tlsClientCert, tlsClientKey *string
}

func addKafkaFlags(fs *flag.FlagSet) kafkaFlags {
	return kafkaFlags{
		brokers:       fs.String("kafka-brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma separated"),
		mechanism:     fs.String("kafka-sasl-mechanism", "", "SASL mechanism of every Kafka connection: plain, scram-sha-256 or scram-sha-512 (empty: none)"),
		user:          fs.String("kafka-sasl-user", "", "SASL user name"),
		password:      fs.String("kafka-sasl-password", "", "SASL password, or @FILE holding it; keep it off the command line (TALLY_KAFKA_SASL_PASSWORD or @FILE)"),
		tls:           fs.Bool("kafka-tls", false, "TLS on every Kafka connection (implied by --kafka-tls-ca)"),
		tlsCA:         fs.String("kafka-tls-ca", "", "PEM CAs that sign the brokers' certificates (default: the system's)"),
		tlsClientCert: fs.String("kafka-tls-client-cert", "", "PEM client certificate for brokers that require one"),
		tlsClientKey:  fs.String("kafka-tls-client-key", "", "PEM private key of --kafka-tls-client-cert"),
	}
}

// cluster is the brokers and how to connect to them, or what is wrong with the settings.
func (k kafkaFlags) cluster() (kafkax.Cluster, error) {
	c := kafkax.Cluster{Brokers: kafkax.SplitBrokers(*k.brokers)}
	password, err := secretValue(*k.password)
	if err != nil {
		return c, fmt.Errorf("--kafka-sasl-password: %w", err)
	}
	if *k.mechanism != "" && (*k.user == "" || password == "") {
		return c, errors.New("--kafka-sasl-mechanism needs --kafka-sasl-user and --kafka-sasl-password")
	}
	if c.Security.SASL, err = kafkax.SASL(*k.mechanism, *k.user, password); err != nil {
		return c, fmt.Errorf("--kafka-sasl-mechanism: %w", err)
	}
	if *k.tls || *k.tlsCA != "" || *k.tlsClientCert != "" {
		if c.Security.TLS, err = (tlsfiles.Client{CAFile: *k.tlsCA, CertFile: *k.tlsClientCert, KeyFile: *k.tlsClientKey}).Config(); err != nil {
			return c, fmt.Errorf("--kafka-tls-*: %w", err)
		}
	}
	return c, nil
}

// secretValue is a secret flag's value: "@FILE" is the file's content (trailing newline
// dropped), anything else the value itself.
func secretValue(v string) (string, error) {
	file, ok := strings.CutPrefix(v, "@")
	if !ok {
		return v, nil
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(raw), "\r\n"), nil
}

type topicFlags struct {
	usage, dlq, accounts, ledger, billing, status, totals, journal *string
}

func addTopicFlags(fs *flag.FlagSet) topicFlags {
	return topicFlags{
		usage:    fs.String("topic-usage", "tally.usage", "topic of gateways' usage events"),
		dlq:      fs.String("topic-usage-dlq", "tally.usage.dlq", "dead-letter topic of rejected usage records"),
		accounts: fs.String("topic-accounts", "tally.accounts", "topic of activations, packs and price overrides"),
		ledger:   fs.String("topic-ledger", "tally.ledger", "topic of the ledger's replies"),
		billing:  fs.String("topic-billing", "tally.billing", "topic Tally emits bills, holds and suspensions to"),
		status:   fs.String("topic-account-status", "tally.account-status", "compacted topic of each account's status"),
		totals:   fs.String("topic-usage-totals", "tally.usage-totals", "compacted topic of running totals"),
		journal:  fs.String("topic-settle-journal", "tally.settle.journal", "the settle worker's journal (one partition, kept forever)"),
	}
}

type clickhouseFlags struct {
	addr, http, user, password, database, protocol *string
	tls                                            *bool
	tlsCA, tlsClientCert, tlsClientKey             *string
}

func addClickHouseFlags(fs *flag.FlagSet) clickhouseFlags {
	return clickhouseFlags{
		addr:          fs.String("clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol address"),
		http:          fs.String("clickhouse-http", "http://127.0.0.1:8123", "ClickHouse HTTP interface URL (https://: over TLS)"),
		user:          fs.String("clickhouse-user", "default", "ClickHouse user"),
		password:      fs.String("clickhouse-password", "", "ClickHouse password, or @FILE holding it; keep it off the command line (TALLY_CLICKHOUSE_PASSWORD or @FILE)"),
		database:      fs.String("clickhouse-database", "tally", "ClickHouse database"),
		protocol:      fs.String("clickhouse-protocol", "http", "protocol of the roles' connections: http (--clickhouse-http) or native (--clickhouse-addr); http is the default because the local chDB engine aborts when a native client dies mid-query"),
		tls:           fs.Bool("clickhouse-tls", false, "TLS on the native protocol (the secure port); HTTP takes TLS from an https:// --clickhouse-http"),
		tlsCA:         fs.String("clickhouse-tls-ca", "", "PEM CAs that sign ClickHouse's certificate (default: the system's)"),
		tlsClientCert: fs.String("clickhouse-tls-client-cert", "", "PEM client certificate, for a ClickHouse that requires one"),
		tlsClientKey:  fs.String("clickhouse-tls-client-key", "", "PEM private key of --clickhouse-tls-client-cert"),
	}
}

// config is how the roles connect (--clickhouse-protocol).
func (c clickhouseFlags) config() (chx.Config, error) { return c.configFor(*c.protocol) }

// configFor is the connection over protocol, native or http.
func (c clickhouseFlags) configFor(protocol string) (chx.Config, error) {
	password, err := secretValue(*c.password)
	if err != nil {
		return chx.Config{}, fmt.Errorf("--clickhouse-password: %w", err)
	}
	cfg := chx.Config{Addr: *c.addr, Protocol: clickhouse.Native, Username: *c.user, Password: password, Database: *c.database}
	secure := *c.tls
	switch protocol {
	case "native":
	case "http":
		u, err := url.Parse(*c.http)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return cfg, fmt.Errorf("--clickhouse-http %q is not a URL like http://127.0.0.1:8123 or https://clickhouse:8443", *c.http)
		}
		cfg.Addr, cfg.Protocol, secure = u.Host, clickhouse.HTTP, u.Scheme == "https"
	default:
		return cfg, fmt.Errorf("--clickhouse-protocol %q: want native or http", protocol)
	}
	if secure || *c.tlsCA != "" || *c.tlsClientCert != "" {
		if cfg.TLS, err = (tlsfiles.Client{CAFile: *c.tlsCA, CertFile: *c.tlsClientCert, KeyFile: *c.tlsClientKey}).Config(); err != nil {
			return cfg, fmt.Errorf("--clickhouse-tls-*: %w", err)
		}
	}
	return cfg, nil
}

type logFlags struct{ level *string }

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{level: fs.String("log-level", "info", "log level: debug, info, warn, error")}
}

func (l logFlags) logger(env *environment) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(*l.level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *l.level)
	}
	return env.logger(lv), nil
}
