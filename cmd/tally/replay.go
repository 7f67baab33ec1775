package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/settle"
)

func init() {
	register("replay", command{
		summary: "re-run billing offline over an event log (JSON lines) and print what Tally emits",
		run:     runReplay,
	})
}

func runReplay(_ context.Context, env *environment, args []string) error {
	fs := newFlags("replay")
	in := fs.String("in", "-", "input event log, one CloudEvent per line ('-': stdin)")
	until := fs.String("until", "", "after the last line, advance the clock to this RFC 3339 instant")
	grace := fs.Duration("grace", 0, "settle month M this long after the first instant of M+1")
	billing := billingFlags(fs)
	if err := env.parse(fs, args); err != nil {
		return err
	}
	cfg, err := billing()
	if err != nil {
		return err
	}
	opts := settle.ReplayOptions{Grace: *grace}
	if *until != "" {
		t, err := cloudevent.ParseTime(*until)
		if err != nil {
			return fmt.Errorf("--until: %w", err)
		}
		opts.Until = t
	}
	var r io.Reader = env.stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return fmt.Errorf("--in: %w", err)
		}
		defer f.Close()
		r = f
	}
	start := time.Now()
	stats, err := settle.Replay(r, env.stdout, env.stderr, cfg, opts)
	if err != nil {
		return err
	}
	if stats.Rejected > 0 || stats.Lines > 100_000 {
		fmt.Fprintf(env.stderr, "tally replay: %d lines, %d accepted, %d rejected, %d events emitted, %d months settled in %s\n",
			stats.Lines, stats.Accepted, stats.Rejected, stats.Emitted, len(stats.Settled), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
