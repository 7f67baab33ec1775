package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tally-billing/tally/ingest"
)

// discard publishes nowhere: the benchmark measures the handler, not Kafka.
type discard struct{}

func (discard) Publish(context.Context, []ingest.Record) error { return nil }

// BenchmarkHandler: one request of 50 events (the test handler's largest batch), as the official SDKs write them (subject, an
// extension) and in the minimal shape, through authentication, splitting, decoding, validation
// and the response, with a publisher that keeps nothing.
func BenchmarkHandler(b *testing.B) {
	shapes := map[string]string{
		"minimal": `{"specversion":"1.0","id":"req-%07d","source":"gw","type":"tally.usage.v1","time":"2026-10-05T11:59:00.123Z","data":{"account":"acct-%06d","service":"image-tagging","calls":3}}`,
		"sdk":     `{"specversion":"1.0","id":"req-%07d","source":"//gateway.example/eu-1","type":"tally.usage.v1","subject":"acme","datacontenttype":"application/json","time":"2026-10-05T11:59:00.123Z","data":{"account":"acct-%06d","calls":3,"service":"image-tagging"},"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`,
	}
	for name, shape := range shapes {
		b.Run(name, func(b *testing.B) {
			var body bytes.Buffer
			body.WriteByte('[')
			for i := range 50 {
				if i > 0 {
					body.WriteByte(',')
				}
				fmt.Fprintf(&body, shape, i, i%1000)
			}
			body.WriteByte(']')
			h := newHandler(b, discard{})
			b.SetBytes(int64(body.Len()))
			b.ReportAllocs()
			for range b.N {
				req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body.Bytes()))
				req.RemoteAddr = "127.0.0.1:4000"
				req.Header.Set("Content-Type", "application/cloudevents-batch+json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("%d: %s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(b.N*50)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
