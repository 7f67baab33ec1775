package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
)

// Shared settings of the roles, with the defaults of SPEC §7.

// newFlags starts a subcommand's flag set with --config, the JSON file every command reads.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.String("config", "", "JSON config file: flag names as keys (flags and TALLY_* variables win)")
	return fs
}

type kafkaFlags struct {
	brokers *string
}

func addKafkaFlags(fs *flag.FlagSet) kafkaFlags {
	return kafkaFlags{brokers: fs.String("kafka-brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma separated")}
}

func (k kafkaFlags) list() []string { return kafkax.SplitBrokers(*k.brokers) }

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
}

func addClickHouseFlags(fs *flag.FlagSet) clickhouseFlags {
	return clickhouseFlags{
		addr:     fs.String("clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol address"),
		http:     fs.String("clickhouse-http", "http://127.0.0.1:8123", "ClickHouse HTTP interface URL"),
		user:     fs.String("clickhouse-user", "default", "ClickHouse user"),
		password: fs.String("clickhouse-password", "", "ClickHouse password"),
		database: fs.String("clickhouse-database", "tally", "ClickHouse database"),
		protocol: fs.String("clickhouse-protocol", "http", "protocol of the roles' connections: http (--clickhouse-http) or native (--clickhouse-addr); http is the default because the local chDB engine aborts when a native client dies mid-query"),
	}
}

func (c clickhouseFlags) config() (chx.Config, error) {
	cfg := chx.Config{Addr: *c.addr, Protocol: clickhouse.Native, Username: *c.user, Password: *c.password, Database: *c.database}
	switch *c.protocol {
	case "native":
	case "http":
		u, err := url.Parse(*c.http)
		if err != nil || u.Host == "" {
			return cfg, fmt.Errorf("--clickhouse-http %q is not a URL like http://127.0.0.1:8123", *c.http)
		}
		cfg.Addr, cfg.Protocol = u.Host, clickhouse.HTTP
	default:
		return cfg, fmt.Errorf("--clickhouse-protocol %q: want native or http", *c.protocol)
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
