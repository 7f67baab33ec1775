package kafkax_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
)

// A consumer-group reader with explicit commits resumes after close and reopen from exactly the
// offset it committed: the property every Tally consumer builds on.
func TestConsumerGroupResumesFromCommittedOffset(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond}
	const total = 20
	var msgs []kafka.Message
	for i := range total {
		msgs = append(msgs, kafka.Message{Key: []byte("acct"), Value: []byte(fmt.Sprint(i))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	group := testinfra.UniqueName(t, "g")
	newReader := func() *kafka.Reader {
		return kafka.NewReader(kafka.ReaderConfig{
			Brokers: brokers, Topic: topic, GroupID: group,
			CommitInterval: 0, // commits are explicit and synchronous
			StartOffset:    kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
		})
	}

	// First session: read 8, commit only the first 5.
	r := newReader()
	var got []string
	for i := range 8 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		got = append(got, string(m.Value))
		if i == 4 {
			if err := r.CommitMessages(ctx, m); err != nil {
				t.Fatalf("commit: %v", err)
			}
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Second session resumes at offset 5: messages 5..19, each once.
	r = newReader()
	defer r.Close()
	for i := 5; i < total; i++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after reopen: %v", err)
		}
		if string(m.Value) != fmt.Sprint(i) || m.Offset != int64(i) {
			t.Fatalf("after reopen got value %q offset %d, want %d", m.Value, m.Offset, i)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7]" {
		t.Fatalf("first session read %v", got)
	}
}

// A compacted topic can be created with its config; keys survive with their latest value.
func TestCompactedTopicKeepsConfig(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, map[string]string{"cleanup.policy": "compact"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"cleanup.policy"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resources) != 1 || len(resp.Resources[0].ConfigEntries) != 1 || resp.Resources[0].ConfigEntries[0].ConfigValue != "compact" {
		t.Fatalf("describe configs: %+v", resp.Resources)
	}
}

// Follow says when it has read every partition to the end it had when it started: by then every
// record produced before is in hand, and an empty topic is caught up at once.
func TestFollowSaysWhenCaughtUp(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 3, nil)
	var msgs []kafka.Message
	for i := range 300 {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i))})
	}
	testinfra.Produce(t, brokers, topic, msgs)
	_, empty := testinfra.Topic(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen atomic.Int64
	atCaughtUp := make(chan int64, 1)
	go func() {
		_ = kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: brokers, Topic: topic, CaughtUp: func() { atCaughtUp <- seen.Load() }}, func(kafka.Message) { seen.Add(1) })
	}()
	emptyCaughtUp := make(chan struct{})
	go func() {
		_ = kafkax.Follow(ctx, kafkax.FollowConfig{Brokers: brokers, Topic: empty, CaughtUp: func() { close(emptyCaughtUp) }}, func(kafka.Message) {})
	}()
	select {
	case n := <-atCaughtUp:
		if n != int64(len(msgs)) {
			t.Fatalf("caught up after %d records, want %d", n, len(msgs))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("never caught up (%d records read)", seen.Load())
	}
	select {
	case <-emptyCaughtUp:
	case <-time.After(30 * time.Second):
		t.Fatal("an empty topic never caught up")
	}
}

// A follower keeps going through a broker that dies and comes back: no record lost, none twice,
// and Follow does not return (it used to end the role on the first read error).
func TestFollowRidesOutABrokerRestart(t *testing.T) {
	b := testinfra.StartBroker(t)
	brokers := b.Brokers()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "follow-restart"
	if err := kafkax.CreateTopics(ctx, kafkax.Plaintext(brokers), kafkax.TopicSpec{Name: topic, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		var msgs []kafka.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i))})
		}
		testinfra.Produce(t, brokers, topic, msgs)
	}
	produce(0, 100)
	var mu sync.Mutex
	seen := map[string]int{}
	var failures, recoveries atomic.Int64
	followed := make(chan error, 1)
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		followed <- kafkax.Follow(fctx, kafkax.FollowConfig{Brokers: brokers, Topic: topic, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Failing: func(err error) {
				if err != nil {
					failures.Add(1)
				} else {
					recoveries.Add(1)
				}
			}}, func(m kafka.Message) {
			mu.Lock()
			seen[string(m.Value)]++
			mu.Unlock()
		})
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for !cond() {
			select {
			case err := <-followed:
				t.Fatalf("Follow returned (%v) while waiting for %s", err, what)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%d records seen)", what, count())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitUntil("the first 100 records", func() bool { return count() == 100 })
	b.Kill()
	time.Sleep(5 * time.Second)
	b.Start()
	produce(100, 200)
	waitUntil("the records produced after the restart", func() bool { return count() == 200 })
	mu.Lock()
	for v, n := range seen {
		if n != 1 {
			t.Errorf("record %s handed over %d times", v, n)
		}
	}
	mu.Unlock()
	// The outage was seen (a readiness check following Failing went red) and is over (green).
	if f, r := failures.Load(), recoveries.Load(); f == 0 || r != f {
		t.Errorf("failing spells reported: %d, recoveries: %d; want at least one, each recovered", f, r)
	}
	stop()
	if err := <-followed; err != nil {
		t.Fatalf("Follow returned %v at shutdown", err)
	}
}

// Readiness checks ping Kafka: the ping must fail once the broker is gone, not answer from a
// metadata cache, and pass again when it is back.
func TestPingTellsWhenTheBrokerIsDown(t *testing.T) {
	b := testinfra.StartBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for range 3 {
		if err := kafkax.Ping(ctx, kafkax.Plaintext(b.Brokers())); err != nil {
			t.Fatal(err)
		}
	}
	b.Stop()
	if err := kafkax.Ping(ctx, kafkax.Plaintext(b.Brokers())); err == nil {
		t.Fatal("ping of a stopped broker succeeded")
	}
	b.Start()
	if err := kafkax.Ping(ctx, kafkax.Plaintext(b.Brokers())); err != nil {
		t.Fatalf("ping after the restart: %v", err)
	}
}

// migrate's topic check: a missing topic is created, a setting that differs is set back (a
// status topic made by hand without compaction would expire suspensions), a partition count the
// spec requires exactly is refused when different, and a second run changes nothing.
func TestEnsureTopicsCreatesRepairsAndRefuses(t *testing.T) {
	brokers, status := testinfra.Topic(t, 2, map[string]string{"retention.ms": "86400000"})
	_, journal := testinfra.Topic(t, 2, nil)
	fresh := testinfra.UniqueName(t, "t")
	t.Cleanup(func() { _ = kafkax.DeleteTopics(context.Background(), kafkax.Plaintext(brokers), fresh) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := map[string]string{"cleanup.policy": "compact", "retention.ms": "-1"}
	specs := []kafkax.TopicSpec{{Name: status, Partitions: 4, Configs: want}, {Name: fresh, Partitions: 3, Configs: map[string]string{"retention.ms": "-1"}}}
	checks, err := kafkax.EnsureTopics(ctx, kafkax.Plaintext(brokers), specs...)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(checks[0].Repaired, []string{"cleanup.policy: delete → compact", "retention.ms: 86400000 → -1"}) || checks[0].Created || checks[0].Partitions != 2 {
		t.Fatalf("existing topic: %+v", checks[0])
	}
	if !checks[1].Created || checks[1].Partitions != 3 {
		t.Fatalf("missing topic: %+v", checks[1])
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{ResourceType: kafka.ResourceTypeTopic, ResourceName: status, ConfigNames: []string{"cleanup.policy", "retention.ms"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.Resources[0].ConfigEntries {
		if want[e.ConfigName] != e.ConfigValue {
			t.Errorf("after the repair %s = %s; want %s", e.ConfigName, e.ConfigValue, want[e.ConfigName])
		}
	}
	again, err := kafkax.EnsureTopics(ctx, kafkax.Plaintext(brokers), specs...)
	if err != nil || len(again[0].Repaired) != 0 || again[1].Created {
		t.Fatalf("second run: %+v, %v", again, err)
	}
	_, err = kafkax.EnsureTopics(ctx, kafkax.Plaintext(brokers), kafkax.TopicSpec{Name: journal, Partitions: 1, ExactPartitions: true})
	if err == nil || !strings.Contains(err.Error(), "must have exactly 1") {
		t.Fatalf("a journal with 2 partitions: %v", err)
	}
}
