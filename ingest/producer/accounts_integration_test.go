package producer_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/producer"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
)

// A pack sold through the accounts API is on the real accounts topic once the API answers 201:
// keyed by the account, and read by the billing core as the pack that was sold.
func TestAccountsAPIWritesAcknowledgedChangesToKafka(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, nil)
	w, err := producer.NewWriter(producer.DefaultConfig(brokers, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	api, err := ingest.NewAccountsAPI(ingest.AccountsConfig{PublishTimeout: 10 * time.Second}, settle.DefaultCatalogue(), w, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/accounts/acme/packs", "application/json", strings.NewReader(
		`{"id":"sale-1","pack_id":"p-1","service":"image-tagging","calls":500000,"valid_from":"2026-10-01T00:00:00+08:00","valid_until":"2027-10-01T00:00:00+08:00"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("answered %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in, _, ev, err := settle.DecodeLine(m.Value, settle.DefaultCatalogue())
	if err != nil {
		t.Fatalf("billing refuses the record %s: %v", m.Value, err)
	}
	p, ok := in.(settle.PackPurchase)
	if string(m.Key) != "acme" || ev.ID != "sale-1" || !ok || p.Account != "acme" || p.PackID != "p-1" || p.Calls != 500000 || p.Service != "image-tagging" {
		t.Fatalf("record key %q id %q: %+v", m.Key, ev.ID, in)
	}
}
