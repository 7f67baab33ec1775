package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
)

func init() {
	register("check", command{
		summary: "check that Kafka and ClickHouse answer (metadata; /ping and SELECT 1)",
		run:     runCheck,
	})
}

func runCheck(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("check")
	kf := addKafkaFlags(fs)
	chAddr := fs.String("clickhouse-addr", "127.0.0.1:9000", "ClickHouse native protocol address")
	chHTTP := fs.String("clickhouse-http", "http://127.0.0.1:8123", "ClickHouse HTTP interface URL")
	chUser := fs.String("clickhouse-user", "default", "ClickHouse user")
	chPassword := fs.String("clickhouse-password", "", "ClickHouse password")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	quiet := fs.Bool("quiet", false, "print nothing; the exit code says it all")
	skipClickHouse := fs.Bool("skip-clickhouse", false, "check Kafka only")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	report := func(what string, err error) error {
		if !*quiet {
			if err != nil {
				fmt.Fprintf(env.stdout, "%-22s FAIL  %v\n", what, err)
			} else {
				fmt.Fprintf(env.stdout, "%-22s ok\n", what)
			}
		}
		return err
	}
	kerr := report("kafka "+*kf.brokers, kafkax.Ping(ctx, kc))
	if *skipClickHouse {
		if kerr != nil {
			return exitError{code: 1}
		}
		return nil
	}
	herr := report("clickhouse "+*chHTTP, chx.PingHTTP(ctx, *chHTTP))
	nerr := report("clickhouse "+*chAddr, func() error {
		conn, err := chx.Open(ctx, chx.Config{Addr: *chAddr, Protocol: clickhouse.Native, Username: *chUser, Password: *chPassword})
		if err != nil {
			return err
		}
		defer conn.Close()
		return chx.SelectOne(ctx, conn)
	}())
	if errors.Join(kerr, herr, nerr) != nil {
		return exitError{code: 1}
	}
	return nil
}
