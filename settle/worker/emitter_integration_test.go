package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle/worker"
)

// emitted is what a topic holds: each key's ids in the order of its partition, and where each key lives.
type emitted struct {
	byKey     map[string][]string
	partition map[string]int
	total     int
}

func readEmitted(t *testing.T, brokers []string, topic string) emitted {
	t.Helper()
	got := emitted{byKey: map[string][]string{}, partition: map[string]int{}}
	if err := kafkax.ReadAll(context.Background(), kafkax.Plaintext(brokers), topic, func(m kafka.Message) error {
		var o struct{ ID string }
		if err := json.Unmarshal(m.Value, &o); err != nil {
			return err
		}
		k := string(m.Key)
		if p, ok := got.partition[k]; ok && p != m.Partition {
			t.Errorf("key %s on partitions %d and %d", k, p, m.Partition)
		}
		got.partition[k] = m.Partition
		got.byKey[k] = append(got.byKey[k], o.ID)
		got.total++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestEmitterWritesInOrderByAccount: many accounts' events, interleaved, buffered past the flush
// threshold and written in small chunks; every account's events sit on one partition (the one
// murmur2 gives its key, as ingest and every Kafka client choose), in emission order, once each;
// status changes are on the status topic too.
func TestEmitterWritesInOrderByAccount(t *testing.T) {
	brokers, billing := testinfra.Topic(t, 4, nil)
	_, status := testinfra.Topic(t, 3, nil)
	cfg := worker.DefaultEmitterConfig(kafkax.Plaintext(brokers), billing, status)
	cfg.MaxBuffered, cfg.ChunkBytes = 700, 16<<10 // several flushes, many chunks per partition
	counted := map[string]int{}
	e, err := worker.NewEmitter(cfg, func(typ string, n int) { counted[typ] += n })
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want := map[string][]string{}
	wantStatus := map[string][]string{}
	const accounts, perAccount = 97, 23
	for i := range perAccount {
		for a := range accounts {
			acct := fmt.Sprintf("acct-%03d", a)
			typ := contract.BillIssuedType
			if i%7 == 3 {
				typ = contract.AccountSuspendedType
			}
			o := cloudevent.Out{ID: fmt.Sprintf("%s-%02d", acct, i), Type: typ, Subject: acct, Source: "test", SpecVersion: "1.0"}
			if err := e.Add(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			want[acct] = append(want[acct], o.ID)
			if typ == contract.AccountSuspendedType {
				wantStatus[acct] = append(wantStatus[acct], o.ID)
			}
		}
	}
	if e.Buffered() == 0 || e.Buffered() >= cfg.MaxBuffered {
		t.Fatalf("buffered %d: want the remainder after automatic flushes", e.Buffered())
	}
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Buffered() != 0 {
		t.Fatalf("buffered %d after a flush", e.Buffered())
	}
	got := readEmitted(t, brokers, billing)
	if got.total != accounts*perAccount {
		t.Fatalf("billing topic holds %d events, want %d", got.total, accounts*perAccount)
	}
	parts, err := kafkax.Partitions(context.Background(), kafkax.Plaintext(brokers), billing)
	if err != nil {
		t.Fatal(err)
	}
	var murmur kafka.Murmur2Balancer
	for acct, ids := range want {
		if fmt.Sprint(got.byKey[acct]) != fmt.Sprint(ids) {
			t.Fatalf("%s: got %v, want %v", acct, got.byKey[acct], ids)
		}
		if p := murmur.Balance(kafka.Message{Key: []byte(acct)}, parts...); got.partition[acct] != p {
			t.Errorf("%s on partition %d, murmur2 says %d", acct, got.partition[acct], p)
		}
	}
	st := readEmitted(t, brokers, status)
	for acct, ids := range wantStatus {
		if fmt.Sprint(st.byKey[acct]) != fmt.Sprint(ids) {
			t.Fatalf("status %s: got %v, want %v", acct, st.byKey[acct], ids)
		}
	}
	if counted[contract.BillIssuedType]+counted[contract.AccountSuspendedType] != accounts*perAccount {
		t.Errorf("onWritten counted %v", counted)
	}
}

// TestEmitterStopsAfterAFailedFlush: a flush cut short leaves every account with a prefix of
// its events on the topic (in order, no gaps, nothing twice), and the emitter refuses more work,
// so nothing is written out of order behind the failure.
func TestEmitterStopsAfterAFailedFlush(t *testing.T) {
	brokers, billing := testinfra.Topic(t, 2, nil)
	_, status := testinfra.Topic(t, 1, nil)
	cfg := worker.DefaultEmitterConfig(kafkax.Plaintext(brokers), billing, status)
	cfg.ChunkBytes = 1024
	e, err := worker.NewEmitter(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for i := range 2000 {
		acct := fmt.Sprintf("a%d", i%5)
		o := cloudevent.Out{ID: fmt.Sprintf("ev-%04d", i), Type: contract.BillIssuedType, Subject: acct, Source: "test", SpecVersion: "1.0"}
		if err := e.Add(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		want[acct] = append(want[acct], o.ID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.Flush(ctx); err == nil {
		t.Fatal("a flush with a cancelled context succeeded")
	}
	if err := e.Flush(context.Background()); err == nil {
		t.Fatal("a flush after a failed one succeeded: it could write behind a gap")
	}
	if err := e.Add(context.Background(), cloudevent.Out{ID: "late", Subject: "a0"}); err == nil {
		t.Fatal("Add after a failed flush succeeded")
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	got := readEmitted(t, brokers, billing)
	if got.total == 2000 {
		t.Log("the cancelled flush's requests all completed after the caller gave up")
	}
	for acct, ids := range want {
		g := got.byKey[acct]
		if len(g) > len(ids) || fmt.Sprint(g) != fmt.Sprint(ids[:len(g)]) {
			t.Fatalf("%s: the topic holds %d events, not a prefix of the %d emitted: %v", acct, len(g), len(ids), g)
		}
	}
}
