package kafkax_test

import (
	"context"
	"fmt"
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
		_ = kafkax.Follow(ctx, brokers, topic, func(kafka.Message) { seen.Add(1) }, func() { atCaughtUp <- seen.Load() })
	}()
	emptyCaughtUp := make(chan struct{})
	go func() {
		_ = kafkax.Follow(ctx, brokers, empty, func(kafka.Message) {}, func() { close(emptyCaughtUp) })
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
