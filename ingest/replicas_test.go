package ingest_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
)

// The verdict follows the last answer: one partition short of four leaves ingest ready (the
// shortage reported as degraded), every partition short makes it not ready; a check Kafka does
// not answer leaves the verdict as it was.
func TestReplicaWatchFollowsTheLastAnswer(t *testing.T) {
	var answer kafkax.Replication
	var fail error
	reg := prometheus.NewRegistry()
	w, err := ingest.NewReplicaWatch(ingest.ReplicaWatchConfig{Brokers: []string{"k:9092"}, Topic: "usage", Interval: time.Hour,
		Describe: func(context.Context, kafkax.Cluster, string) (kafkax.Replication, error) { return answer, fail }},
		slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := w.Ready(ctx); err != nil || w.Degraded() != nil {
		t.Fatalf("before any check: %v %v", err, w.Degraded())
	}
	short := func(ids ...int) []kafkax.ShortPartition {
		var out []kafkax.ShortPartition
		for _, id := range ids {
			out = append(out, kafkax.ShortPartition{Partition: id, InSync: 1, Replicas: 3})
		}
		return out
	}
	answer = kafkax.Replication{MinInSync: 2, Partitions: 4, Short: short(3)}
	w.Check(ctx)
	if err := w.Ready(ctx); err != nil {
		t.Fatalf("one partition of four short: not ready (%v); the other three take writes", err)
	}
	if err := w.Degraded(); err == nil || !strings.Contains(err.Error(), "partitions 3 (1 of 3 in sync) of 4 are below min.insync.replicas=2") {
		t.Fatalf("one partition short, degraded: %v", err)
	}
	if g := gauge(t, reg, "tally_ingest_usage_partitions_under_min_isr"); g != 1 {
		t.Fatalf("gauge %v", g)
	}
	answer = kafkax.Replication{MinInSync: 2, Partitions: 4, Short: short(0, 1, 2, 3)}
	w.Check(ctx)
	if err := w.Ready(ctx); err == nil || !strings.Contains(err.Error(), "partitions 0 (1 of 3 in sync), 1") {
		t.Fatalf("every partition short: %v", err)
	}
	fail = errors.New("no broker answers")
	w.Check(ctx)
	if w.Ready(ctx) == nil {
		t.Fatal("a check without an answer made ingest ready")
	}
	fail, answer = nil, kafkax.Replication{MinInSync: 2, Partitions: 4}
	w.Check(ctx)
	if err := w.Ready(ctx); err != nil || w.Degraded() != nil {
		t.Fatalf("all in sync: %v %v", err, w.Degraded())
	}
}

// On a real three-node cluster: a topic replicated to two with min.insync.replicas 2 has
// partitions short the moment one node is SIGKILLed; ingest's watch reports them (gauge up) and
// stays ready, the other partitions taking writes, and all is in sync again once the node is back.
func TestReplicaWatchSeesANodeGoOnARealCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node Kafka cluster")
	}
	c := testinfra.StartCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topic := testinfra.UniqueName(t, "t")
	if err := kafkax.CreateTopics(ctx, kafkax.Plaintext(c.Brokers()), kafkax.TopicSpec{Name: topic, Partitions: 3, ReplicationFactor: 2,
		Configs: map[string]string{"min.insync.replicas": "2"}}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	w, err := ingest.NewReplicaWatch(ingest.ReplicaWatchConfig{Brokers: c.Brokers(), Topic: topic, Interval: 200 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	go w.Run(ctx)
	waitFor := func(what string, ok func(error) bool) {
		t.Helper()
		for !ok(w.Ready(ctx)) {
			if ctx.Err() != nil {
				t.Fatalf("%s: still %v", what, w.Ready(ctx))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	waitFor("ready on a healthy cluster", func(err error) bool { return err == nil })
	c.Nodes[0].Kill()
	for w.Degraded() == nil || !strings.Contains(w.Degraded().Error(), "below min.insync.replicas=2") {
		if ctx.Err() != nil {
			t.Fatal("a node down: the shortage was never reported")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := gauge(t, reg, "tally_ingest_usage_partitions_under_min_isr"); n < 1 || n >= 3 {
		t.Errorf("tally_ingest_usage_partitions_under_min_isr = %v with one node of three down (replicas on two)", n)
	} else if err := w.Ready(ctx); err != nil {
		t.Errorf("not ready while %v of 3 partitions still take writes: %v", 3-n, err)
	}
	c.Nodes[0].Start()
	c.WaitInSync(2*time.Minute, topic)
	waitFor("in sync with the node back", func(err error) bool { return err == nil && w.Degraded() == nil })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
