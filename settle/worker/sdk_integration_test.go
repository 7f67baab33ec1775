package worker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/cloudevents/sdk-go/protocol/kafka_sarama/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle/worker"
)

// A ledger built on the official CloudEvents Go SDK (its Kafka receiver, on sarama) reads the
// bills and status events Tally writes: the records carry the content-type header the Kafka
// binding requires for structured mode.
func TestOfficialGoSDKReceiverReadsBills(t *testing.T) {
	brokers, billing := testinfra.Topic(t, 2, nil)
	_, status := testinfra.Topic(t, 1, nil)
	e, err := worker.NewEmitter(worker.DefaultEmitterConfig(kafkax.Plaintext(brokers), billing, status), func(string, int) {})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	at := cloudevent.FormatTime(time.Date(2026, 11, 1, 2, 0, 0, 0, time.UTC))
	bill := contract.Bill{BillID: contract.BillID("acme", "2026-10"), Account: "acme", Period: "2026-10", Currency: "CNY",
		Lines: []contract.BillLine{}, Adjustments: []contract.Adjustment{}, Total: "12.50"}
	want := map[string]string{
		contract.BillIssuedType + ":" + bill.BillID:    contract.BillIssuedType,
		contract.AccountSuspendedType + ":hold:acme:x": contract.AccountSuspendedType,
	}
	for _, o := range []cloudevent.Out{
		cloudevent.NewOut("tally.settle", contract.BillIssuedType, contract.BillIssuedType+":"+bill.BillID, "acme", at, bill),
		cloudevent.NewOut("tally.settle", contract.AccountSuspendedType, contract.AccountSuspendedType+":hold:acme:x", "acme", at,
			contract.AccountStatus{Account: "acme", Reason: contract.ReasonHoldFailed}),
	} {
		if err := e.Add(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}

	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_8_0_0
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	consumer, err := kafka_sarama.NewConsumer(brokers, cfg, testinfra.UniqueName(t, "sdk"), billing)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close(context.Background())
	client, err := cloudevents.NewClient(consumer)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := map[string]cloudevents.Event{}
	go func() {
		_ = client.StartReceiver(ctx, func(ev cloudevents.Event) {
			mu.Lock()
			got[ev.ID()] = ev
			if len(got) == len(want) {
				cancel()
			}
			mu.Unlock()
		})
	}()
	<-ctx.Done()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("the SDK's receiver read %d of %d events: %v", len(got), len(want), got)
	}
	for id, typ := range want {
		ev := got[id]
		if ev.Type() != typ || ev.Subject() != "acme" || ev.Source() != "tally.settle" {
			t.Errorf("%s read as %s", id, ev)
		}
	}
	var b contract.Bill
	if err := got[contract.BillIssuedType+":"+bill.BillID].DataAs(&b); err != nil || b.Total != "12.50" || b.BillID != bill.BillID {
		t.Errorf("bill data %+v, %v", b, err)
	}
}
