package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tally-billing/tally/ingest/sink"
)

func init() {
	register("gaps", command{
		summary: "list usage records Kafka deleted before the sink wrote them; `gaps ack` accepts a loss so the stopped partition goes on",
		run:     runGaps,
	})
}

func runGaps(ctx context.Context, env *environment, args []string) error {
	ack := len(args) > 0 && args[0] == "ack"
	if ack {
		args = args[1:]
	}
	fs := newFlags("gaps")
	cf := addClickHouseFlags(fs)
	tf := addTopicFlags(fs)
	group := fs.String("group", "tally-sink", "the sink's consumer group")
	partition := fs.Int("partition", -1, "ack: the partition of the gap")
	from := fs.Int64("from", -1, "ack: the first offset of the gap (as `tally gaps` lists it)")
	by := fs.String("by", "", "ack: who accepts the loss (recorded with it)")
	note := fs.String("note", "", "ack: why, e.g. the ticket or what was restored")
	if err := env.parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if ack {
		if *partition < 0 || *from < 0 {
			return errors.New("gaps ack: --partition and --from name the gap (see `tally gaps`)")
		}
		g, err := sink.AcknowledgeGap(ctx, conn, *group, *tf.usage, int32(*partition), *from, *by, *note)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "acknowledged: %s/%d offsets [%d, %d), %d records lost; the sink goes on from offset %d\n",
			g.Topic, g.Partition, g.From, g.To, g.To-g.From, g.To)
		return nil
	}
	gaps, err := sink.ListGaps(ctx, conn)
	if err != nil {
		return err
	}
	if len(gaps) == 0 {
		fmt.Fprintln(env.stdout, "no gaps: every usage record Kafka held reached the sink")
		return nil
	}
	tw := tabwriter.NewWriter(env.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "consumer\ttopic\tpartition\tfrom\tto\trecords\tdetected\tacknowledged\tby\tnote")
	open := 0
	for _, g := range gaps {
		acked := "NO: partition stopped"
		if !g.AcknowledgedAt.IsZero() {
			acked = g.AcknowledgedAt.Format(time.RFC3339)
		} else {
			open++
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", g.Consumer, g.Topic, g.Partition, g.From, g.To, g.To-g.From,
			g.DetectedAt.Format(time.RFC3339), acked, g.AcknowledgedBy, g.Note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if open > 0 {
		fmt.Fprintf(env.stdout, "%d gap(s) not acknowledged: `tally gaps ack --partition P --from F --by NAME` accepts the loss\n", open)
		return exitError{code: 1}
	}
	return nil
}
