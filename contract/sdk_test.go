package contract

import (
	"encoding/json"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// sdkUsage is a usage event as the official Go SDK writes it in structured mode, with the
// attributes producers add: subject, dataschema and extensions of each kind.
func sdkUsage(t testing.TB, id string) []byte {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("//gateway.example/eu-1")
	e.SetType(UsageType)
	e.SetSubject("acme")
	e.SetDataSchema("https://example.com/schemas/usage.json")
	e.SetTime(received.Add(-time.Minute))
	e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	e.SetExtension("sequence", 42)
	e.SetExtension("sampled", true)
	if err := e.SetData(cloudevents.ApplicationJSON, map[string]any{"account": "acme", "service": "image-tagging", "calls": 3}); err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// What the Go SDK writes, its defaults and extensions included, takes the fast path and reads
// as the SDK's own decoder reads it.
func TestEventsTheGoSDKWritesTakeTheFastPath(t *testing.T) {
	for _, id := range []string{"sdk-1", "café <&> \"quoted\" \u2028 end"} {
		raw := sdkUsage(t, id)
		u, _, ok := fastUsage(raw, received, catalogue{})
		if !ok {
			t.Fatalf("the SDK's event goes the reflective way: %s", raw)
		}
		want := Usage{ID: id, Account: "acme", Service: "image-tagging", Calls: 3, Time: received.Add(-time.Minute)}
		if u.ID != want.ID || u.Account != want.Account || u.Service != want.Service || u.Calls != want.Calls || !u.Time.Equal(want.Time) {
			t.Fatalf("%s: %+v; want %+v", raw, u, want)
		}
		agreeWithSDK(t, raw, u)
	}
}

// agreeWithSDK fails t unless the SDK's decoder refuses raw or reads it as u.
func agreeWithSDK(t *testing.T, raw []byte, u Usage) {
	t.Helper()
	var e cloudevents.Event
	if err := json.Unmarshal(raw, &e); err != nil {
		return // the SDK is stricter in places (specversion required, extension names)
	}
	var d struct {
		Account, Service string
		Calls            *int64
	}
	if err := json.Unmarshal(e.Data(), &d); err != nil {
		t.Fatalf("the SDK reads data %q, which is not JSON (%v), of %q, taken as %+v", e.Data(), err, raw, u)
	}
	calls := int64(1)
	if d.Calls != nil {
		calls = *d.Calls
	}
	if e.ID() != u.ID || !e.Time().Equal(u.Time) || d.Account != u.Account || d.Service != u.Service || calls != u.Calls {
		t.Fatalf("the SDK reads %q as id %q at %v, %s/%s ×%d; Tally as %+v", raw, e.ID(), e.Time(), d.Account, d.Service, calls, u)
	}
}

// FuzzDecodeUsageAgreesWithTheGoSDK: an event both decoders take means the same usage to both.
func FuzzDecodeUsageAgreesWithTheGoSDK(f *testing.F) {
	f.Add(sdkUsage(f, "sdk-1"))
	for _, raw := range producerShapes {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if u, err := DecodeUsage(raw, received, catalogue{}); err == nil {
			agreeWithSDK(t, raw, u)
		}
	})
}
