package producer_test

import (
	"context"
	"log"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/settle"
)

// A gateway that produces straight to Kafka: one Producer for the process, one Send per batch of
// calls. Send returns once Kafka acknowledged every event; on error, retry the same events (their
// ids make the retry harmless).
func Example() {
	p, err := producer.New(producer.DefaultConfig([]string{"127.0.0.1:9092"}, "tally.usage"), "gateway-eu-1", settle.DefaultCatalogue())
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = p.Send(ctx,
		contract.Usage{ID: "req-7f3a", Account: "acme", Service: "image-tagging", Calls: 1, Time: time.Now()},
		contract.Usage{ID: "req-7f3b", Account: "acme", Service: "vehicle-recognition", Calls: 1, Time: time.Now()},
	)
	if err != nil {
		log.Printf("usage not recorded, retry: %v", err)
	}
}
