package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
)

// tally migrate on a three-node cluster: every topic gets three replicas and
// min.insync.replicas 2, a second run finds them so, and a topic an earlier hand made with
// one replica is refused with what to do.
func TestMigrateReplicatesTopicsOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node Kafka cluster")
	}
	c := testinfra.StartCluster(t, 3)
	brokers := strings.Join(c.Brokers(), ",")
	if code, _, errOut := tally(t, "migrate", "--skip-clickhouse", "--kafka-brokers", brokers, "--replication-factor", "2", "--min-insync-replicas", "3"); code == 0 ||
		!strings.Contains(errOut, "--min-insync-replicas 3 is more than --replication-factor 2") {
		t.Fatalf("min.insync.replicas above the replicas: %d %s", code, errOut)
	}
	args := []string{"migrate", "--skip-clickhouse", "--kafka-brokers", brokers, "--replication-factor", "3", "--min-insync-replicas", "2"}
	for run := range 2 {
		if code, _, errOut := tally(t, args...); code != 0 {
			t.Fatalf("run %d: %d %s", run, code, errOut)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, topic := range []string{"tally.usage", "tally.usage.dlq", "tally.accounts", "tally.ledger", "tally.billing", "tally.account-status", "tally.usage-totals", "tally.settle.journal"} {
		r, err := kafkax.DescribeReplication(ctx, kafkax.Plaintext(c.Brokers()), topic)
		if err != nil {
			t.Fatal(err)
		}
		if r.MinInSync != 2 || len(r.Short) != 0 {
			t.Errorf("%s: %+v", topic, r)
		}
	}
	if err := kafkax.CreateTopics(ctx, kafkax.Plaintext(c.Brokers()), kafkax.TopicSpec{Name: "by-hand.usage", Partitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := tally(t, append(args, "--topic-usage", "by-hand.usage")...)
	if code == 0 || !strings.Contains(errOut, "topic by-hand.usage partition 0 has 1 replicas; want 3: reassign its partitions") {
		t.Fatalf("a usage topic with one replica: %d %s", code, errOut)
	}
}
