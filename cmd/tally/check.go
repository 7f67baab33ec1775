package main

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	cf := addClickHouseFlags(fs)
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
	var errs []error
	for _, protocol := range []string{"http", "native"} {
		where := *cf.http
		if protocol == "native" {
			where = *cf.addr
		}
		errs = append(errs, report("clickhouse "+where, func() error {
			cfg, err := cf.configFor(protocol)
			if err != nil {
				return err
			}
			cfg.Database = "" // the server, not the database: check runs before migrate creates it
			if protocol == "http" {
				if err := chx.PingHTTP(ctx, *cf.http, cfg.TLS); err != nil {
					return err
				}
			}
			conn, err := chx.Open(ctx, cfg)
			if err != nil {
				return err
			}
			defer conn.Close()
			return chx.SelectOne(ctx, conn)
		}()))
	}
	if errors.Join(append(errs, kerr)...) != nil {
		return exitError{code: 1}
	}
	return nil
}
