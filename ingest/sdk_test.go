package ingest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

// A gateway built on the official CloudEvents Go SDK, with its defaults (binary mode: attributes
// in ce-* headers) and in structured mode, gets its usage accepted; a bad event is refused with
// 400, which the SDK reports as a NACK.
func TestOfficialGoSDKCanSendUsage(t *testing.T) {
	pub := &memPublisher{}
	srv := httptest.NewServer(newHandler(t, pub))
	defer srv.Close()
	client, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	event := func(id, service string) cloudevents.Event {
		e := cloudevents.NewEvent()
		e.SetID(id)
		e.SetSource("gw-sdk")
		e.SetType(contract.UsageType)
		e.SetTime(clock.Add(-time.Minute))
		if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{"account": "acme", "service": service, "calls": 3}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	target := cloudevents.ContextWithTarget(context.Background(), srv.URL+"/v1/events")
	if res := client.Send(target, event("sdk-binary", "image-tagging")); !cloudevents.IsACK(res) {
		t.Fatalf("binary mode (the SDK's default): %v", res)
	}
	if res := client.Send(binding.WithForceStructured(target), event("sdk-structured", "image-tagging")); !cloudevents.IsACK(res) {
		t.Fatalf("structured mode: %v", res)
	}
	res := client.Send(target, event("sdk-bad", "no-such-service"))
	var hr *cehttp.Result
	if cloudevents.IsACK(res) || !cloudevents.ResultAs(res, &hr) || hr.StatusCode != http.StatusBadRequest {
		t.Fatalf("an unknown service: %v", res)
	}
	if len(pub.records) != 2 {
		t.Fatalf("%d records published; want 2", len(pub.records))
	}
	for i, want := range []string{"sdk-binary", "sdk-structured"} {
		u, err := contract.DecodeUsage(pub.records[i].Value, pub.records[i].Time, settle.DefaultCatalogue())
		if err != nil || u.ID != want || u.Account != "acme" || u.Calls != 3 || !u.Time.Equal(clock.Add(-time.Minute)) {
			t.Errorf("record %d: %+v, %v; want %s, 3 calls of acme", i, u, err, want)
		}
	}
}
