package worker_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/internal/testinfra"
)

// GET /v1/accounts/{a}/status follows the account-status topic: the latest event per account.
func TestStatusAPIFollowsTheStatusTopic(t *testing.T) {
	brokers, topic := testinfra.Topic(t, 1, map[string]string{"cleanup.policy": "compact"})
	testinfra.Produce(t, brokers, topic, []kafka.Message{
		{Key: []byte("a"), Value: []byte(`{"id":"1","type":"tally.account.suspended.v1","time":"2026-09-01T02:00:00+08:00","data":{"account":"a","reason":"hold_failed"}}`)},
		{Key: []byte("b"), Value: []byte(`{"id":"2","type":"tally.account.suspended.v1","time":"2026-09-01T02:00:00+08:00","data":{"account":"b","reason":"hold_failed"}}`)},
		{Key: []byte("b"), Value: []byte(`{"id":"3","type":"tally.account.resumed.v1","time":"2026-09-05T02:00:00+08:00","data":{"account":"b","reason":"hold_placed"}}`)},
	})
	s := worker.NewStatuses(brokers, topic, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	api := (&worker.API{Statuses: s}).Handler()
	get := func(account string) worker.AccountStatus {
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/accounts/"+account+"/status", nil))
		var st worker.AccountStatus
		_ = json.Unmarshal(rec.Body.Bytes(), &st)
		return st
	}
	deadline := time.Now().Add(20 * time.Second)
	for get("b").Reason != "hold_placed" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if a := get("a"); a.Status != "suspended" || a.Reason != "hold_failed" {
		t.Fatalf("a: %+v", a)
	}
	if b := get("b"); b.Status != "active" || b.Reason != "hold_placed" || b.Since != "2026-09-05T02:00:00+08:00" {
		t.Fatalf("b: %+v", b)
	}
	if c := get("c"); c.Status != "active" {
		t.Fatalf("unknown account: %+v", c)
	}
}
