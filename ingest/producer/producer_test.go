package producer_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

// The gateway client writes valid CloudEvents keyed by account, and refuses an invalid batch
// whole, before writing anything.
func TestProducerSendsValidatedCloudEvents(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, nil)
	p, err := producer.New(producer.DefaultConfig(brokers, topic), "gateway-eu-1", settle.DefaultCatalogue())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := time.Now()
	bad := []contract.Usage{
		{ID: "ok-1", Account: "acme", Service: "image-tagging", Calls: 1, Time: now},
		{ID: "bad-1", Account: "acme", Service: "image-tagging", Calls: 0, Time: now},
	}
	if err := p.Send(ctx, bad...); err == nil || !strings.Contains(err.Error(), `usage 1 (id "bad-1")`) {
		t.Fatalf("invalid batch: %v", err)
	}
	if err := p.Send(ctx, contract.Usage{ID: "ok-2", Account: "acme", Service: "smart-cropping", Calls: 42, Time: now}); err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		ID, Source, Type string
		Data             struct {
			Account, Service string
			Calls            int64
		}
	}
	if err := json.Unmarshal(m.Value, &ev); err != nil {
		t.Fatal(err)
	}
	if m.Offset != 0 || string(m.Key) != "acme" || ev.ID != "ok-2" || ev.Source != "gateway-eu-1" || ev.Type != contract.UsageType || ev.Data.Calls != 42 {
		t.Fatalf("record offset %d key %q event %+v", m.Offset, m.Key, ev)
	}
}
