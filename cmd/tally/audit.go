package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tally-billing/tally/ingest/sink"
)

func init() {
	register("audit", command{
		summary: "account for every offset of the usage topic as a usage row, a dead letter or an acknowledged gap (exit 1 when one is missing)",
		run:     runAudit,
	})
}

func runAudit(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("audit")
	kf := addKafkaFlags(fs)
	tf := addTopicFlags(fs)
	cf := addClickHouseFlags(fs)
	group := fs.String("group", "tally-sink", "the sink's consumer group")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long (the audit reads the dead-letter topic and the retained usage topic)")
	billing := billingFlags(fs)
	if err := env.parse(fs, args); err != nil {
		return err
	}
	kc, err := kf.cluster()
	if err != nil {
		return err
	}
	bcfg, err := billing()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := cf.open(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	parts, err := sink.Audit(ctx, conn, sink.AuditConfig{Brokers: kc.Brokers, Security: kc.Security, Topic: *tf.usage, DLQTopic: *tf.dlq, Group: *group,
		Location: bcfg.Location, Services: bcfg.Catalogue})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "partition\tprogress\trows\tretries\tdead letters\tacknowledged gaps\tno record\tbelow log start, unverifiable\tpending\tmissing\tboth row and dead letter\t")
	var bad int
	for _, p := range parts {
		if !p.Clean() {
			bad++
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", p.Partition, p.Progress, p.Rows, p.Retries, p.DeadLetters, p.Gap, p.NoRecord, p.Unverifiable,
			p.Pending, rangesText(p.Missing), rangesText(p.Both))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad > 0 {
		fmt.Fprintf(env.stdout, "%d partition(s) with offsets not accounted for exactly once: usage was lost or written twice after the sink took it\n", bad)
		return exitError{code: 1}
	}
	fmt.Fprintln(env.stdout, "every offset below the sink's progress is a usage row, a retry of one, a dead letter or an acknowledged gap, exactly once")
	return nil
}

func rangesText(rs []sink.OffsetRange) string {
	if len(rs) == 0 {
		return "0"
	}
	n := int64(0)
	for _, r := range rs {
		n += r.To - r.From
	}
	s := fmt.Sprintf("%d:", n)
	for i, r := range rs {
		if i == 3 {
			s += fmt.Sprintf(" … (%d ranges)", len(rs))
			break
		}
		s += fmt.Sprintf(" [%d,%d)", r.From, r.To)
	}
	return s
}
