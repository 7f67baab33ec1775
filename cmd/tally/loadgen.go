package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/tally-billing/tally/contract"
)

func init() {
	register("loadgen", command{
		summary: "write a synthetic, reproducible event log (usage of many accounts) as JSON lines",
		run:     runLoadgen,
	})
}

// runLoadgen writes a month of usage: events spread over the month in time order, accounts
// activating services on the 1st, and a share of gateway retries (same id, same payload).
func runLoadgen(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("loadgen")
	out := fs.String("out", "-", "output file ('-': stdout)")
	accounts := fs.Int("accounts", 1000, "number of accounts")
	events := fs.Int("events", 100_000, "number of usage events")
	period := fs.String("period", "2026-10", "billing month YYYY-MM of the usage")
	retries := fs.Float64("retries", 0.01, "share of events sent twice (gateway retries)")
	seed := fs.Uint64("seed", 1, "random seed: the same seed writes the same log")
	target := fs.String("target", "", "instead of writing a log, POST fresh events to this ingest URL (e.g. http://127.0.0.1:8080/v1/events)")
	apiKey := fs.String("api-key", "", "with --target: the bearer key, as @FILE or TALLY_API_KEY")
	batch := fs.Int("batch", 100, "with --target: events per request")
	clients := fs.Int("clients", 8, "with --target: concurrent clients")
	duration := fs.Duration("duration", 10*time.Second, "with --target: how long to send")
	shape := fs.String("shape", "minimal", "with --target: event shape, minimal or sdk (subject, datacontenttype, an extension, as the official SDKs write events)")
	rate := fs.Float64("rate", 0, "with --target: events per second to offer, spread over the clients (0: as fast as ingest answers)")
	billing := billingFlags(fs)
	if err := env.parse(fs, args); err != nil {
		return err
	}
	cfg, err := billing()
	if err != nil {
		return err
	}
	p, err := contract.ParsePeriod(*period)
	if err != nil {
		return err
	}
	if *accounts < 1 || *events < 0 {
		return errors.New("--accounts must be ≥ 1 and --events ≥ 0")
	}
	if *target != "" {
		if *batch < 1 || *clients < 1 || *duration <= 0 || *duration > time.Hour || *rate < 0 || *shape != "minimal" && *shape != "sdk" {
			return errors.New("--batch and --clients must be ≥ 1, --duration within (0, 1h], --rate ≥ 0 and --shape minimal or sdk")
		}
		key, err := secretValue(*apiKey)
		if err != nil {
			return fmt.Errorf("--api-key: %w", err)
		}
		return httpLoad(ctx, env, httpLoadConfig{target: *target, apiKey: key, batch: *batch, clients: *clients, duration: *duration,
			rate: *rate, accounts: *accounts, services: cfg.Catalogue.ServiceIDs(), sdk: *shape == "sdk", retries: *retries})
	}
	w := bufio.NewWriterSize(env.stdout, 1<<16)
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = bufio.NewWriterSize(f, 1<<16)
	}
	r := rand.New(rand.NewPCG(*seed, 0x7a11))
	services := cfg.Catalogue.ServiceIDs()
	start, end := p.Start(cfg.Location), p.End(cfg.Location)
	line := func(e contract.Event) {
		w.Write(contract.MustEncode(e))
		w.WriteByte('\n')
	}
	for a := range *accounts {
		for i, svc := range services {
			if (a+i)%2 == 0 {
				line(contract.Event{ID: fmt.Sprintf("act-%d-%s", a, svc), Source: "loadgen", Type: contract.ActivatedType, Time: start,
					Data: contract.ActivationData{Account: fmt.Sprintf("acct-%06d", a), Service: svc}})
			}
		}
	}
	step := end.Sub(start) / time.Duration(max(*events, 1))
	for n := range *events {
		e := contract.Event{ID: fmt.Sprintf("ev-%d", n), Source: "loadgen", Type: contract.UsageType, Time: start.Add(time.Duration(n) * step),
			Data: contract.UsageData{Account: fmt.Sprintf("acct-%06d", r.IntN(*accounts)), Service: services[r.IntN(len(services))], Calls: int64(1 + r.IntN(100))}}
		line(e)
		if r.Float64() < *retries {
			line(e)
		}
	}
	return w.Flush()
}
