package contract

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tally-billing/tally/internal/cloudevent"
)

// catalogue is a stand-in for the billing core's catalogue: two services, one retired.
type catalogue struct{}

var retiredAt = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func (catalogue) CheckService(s string, at time.Time) error {
	switch {
	case s == "image-tagging":
		return nil
	case s == "old-service" && at.Before(retiredAt):
		return nil
	case s == "old-service":
		return fmt.Errorf("service %q was retired at %s", s, retiredAt.Format(time.RFC3339))
	}
	return fmt.Errorf("unknown service %q", s)
}

var received = time.Date(2026, 10, 5, 12, 0, 0, 0, time.UTC)

// rawEvent is a usage event whose id is written into the JSON as given (escapes, bad bytes).
func rawEvent(id, at string) string {
	return `{"specversion":"1.0","id":"` + id + `","source":"gw","type":"tally.usage.v1","time":"` + at + `","data":{"account":"a","service":"image-tagging"}}`
}

func event(id, at, data string) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"gw","type":"tally.usage.v1","time":%q,"data":%s}`, id, at, data)
}

func TestParseUsage(t *testing.T) {
	ok := "2026-10-05T12:00:00Z"
	cases := []struct {
		name, raw string
		want      Usage
		reason    string
	}{
		{name: "calls default to 1", raw: event("e1", ok, `{"account":"acme","service":"image-tagging"}`),
			want: Usage{ID: "e1", Account: "acme", Service: "image-tagging", Calls: 1, Time: received}},
		{name: "calls given", raw: event("e1", ok, `{"account":"a.B_c-9","service":"image-tagging","calls":1000000}`),
			want: Usage{ID: "e1", Account: "a.B_c-9", Service: "image-tagging", Calls: 1_000_000, Time: received}},
		{name: "5 minutes ahead is fine", raw: event("e1", "2026-10-05T12:05:00Z", `{"account":"a","service":"image-tagging"}`),
			want: Usage{ID: "e1", Account: "a", Service: "image-tagging", Calls: 1, Time: received.Add(5 * time.Minute)}},
		{name: "retired service before retirement", raw: event("e1", "2026-05-31T23:59:59Z", `{"account":"a","service":"old-service"}`),
			want: Usage{ID: "e1", Account: "a", Service: "old-service", Calls: 1, Time: time.Date(2026, 5, 31, 23, 59, 59, 0, time.UTC)}},
		{name: "more than 5 minutes ahead", raw: event("e1", "2026-10-05T12:05:01Z", `{"account":"a","service":"image-tagging"}`), reason: "ahead of the receiving clock"},
		{name: "no time", raw: `{"specversion":"1.0","id":"e","type":"tally.usage.v1","data":{"account":"a","service":"image-tagging"}}`, reason: "time is missing"},
		{name: "no account", raw: event("e1", ok, `{"service":"image-tagging"}`), reason: "data.account is missing"},
		{name: "empty account", raw: event("e1", ok, `{"account":"","service":"image-tagging"}`), reason: "data.account is empty"},
		{name: "account too long", raw: event("e1", ok, `{"account":"`+strings.Repeat("a", 65)+`","service":"image-tagging"}`), reason: "longer than 64"},
		{name: "account 64 chars", raw: event("e1", ok, `{"account":"`+strings.Repeat("a", 64)+`","service":"image-tagging"}`),
			want: Usage{ID: "e1", Account: strings.Repeat("a", 64), Service: "image-tagging", Calls: 1, Time: received}},
		{name: "account bad char", raw: event("e1", ok, `{"account":"a/b","service":"image-tagging"}`), reason: "outside [A-Za-z0-9._-]"},
		{name: "unknown service", raw: event("e1", ok, `{"account":"a","service":"x"}`), reason: `unknown service "x"`},
		{name: "id with DEL", raw: rawEvent("e\x7f1", ok), reason: "id holds U+007F"},
		{name: "id with an escaped control character", raw: rawEvent(`e\u00011`, ok), reason: "id holds U+0001"},
		{name: "id with a lone surrogate", raw: rawEvent(`e\ud800`, ok), reason: "id holds U+FFFD"},
		{name: "invalid UTF-8", raw: rawEvent("e\xff", ok), reason: "not valid UTF-8"},
		{name: "retired service", raw: event("e1", ok, `{"account":"a","service":"old-service"}`), reason: "retired"},
		{name: "calls zero", raw: event("e1", ok, `{"account":"a","service":"image-tagging","calls":0}`), reason: "outside 1..1000000"},
		{name: "calls too many", raw: event("e1", ok, `{"account":"a","service":"image-tagging","calls":1000001}`), reason: "outside 1..1000000"},
		{name: "calls negative", raw: event("e1", ok, `{"account":"a","service":"image-tagging","calls":-1}`), reason: "outside 1..1000000"},
		{name: "calls fraction", raw: event("e1", ok, `{"account":"a","service":"image-tagging","calls":2.5}`), reason: "not an integer"},
		{name: "calls string", raw: event("e1", ok, `{"account":"a","service":"image-tagging","calls":"2"}`), reason: "not an integer"},
		{name: "unknown field", raw: event("e1", ok, `{"account":"a","service":"image-tagging","cals":2}`), reason: `unknown field "cals"`},
		{name: "empty id", raw: event("", ok, `{"account":"a","service":"image-tagging"}`), reason: "id is missing"},
		{name: "wrong type", raw: strings.Replace(event("e1", ok, `{"account":"a","service":"image-tagging"}`), "tally.usage.v1", "tally.other.v1", 1), reason: "is not \"tally.usage.v1\""},
		{name: "data not an object", raw: event("e1", ok, `[1]`), reason: "data must be a JSON object"},
		{name: "bad specversion", raw: strings.Replace(event("e1", ok, `{}`), `"1.0"`, `"0.3"`, 1), reason: "specversion"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := cloudevent.Decode([]byte(c.raw))
			var u Usage
			if err == nil {
				u, err = ParseUsage(ev, received, catalogue{})
			}
			if c.reason != "" {
				var ce *cloudevent.Error
				if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), c.reason) {
					t.Fatalf("err = %v; want a rejection containing %q", err, c.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.ID != c.want.ID || u.Account != c.want.Account || u.Service != c.want.Service || u.Calls != c.want.Calls || !u.Time.Equal(c.want.Time) {
				t.Fatalf("got %+v; want %+v", u, c.want)
			}
		})
	}
}

// FuzzParseUsage: no input crashes the decoder, and whatever it accepts satisfies the contract.
func FuzzParseUsage(f *testing.F) {
	f.Add([]byte(event("e1", "2026-10-05T12:00:00Z", `{"account":"acme","service":"image-tagging","calls":3}`)))
	f.Add([]byte(event("e1", "2026-10-05T12:00:00Z", `{"account":"acme","service":"image-tagging","calls":1e3}`)))
	f.Add([]byte(`{"id":"x","type":"tally.usage.v1","time":"2026-10-05T12:00:00.123456789+08:00","recordedat":"x","data":{}}`))
	f.Add([]byte(`{"data":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := cloudevent.Decode(raw)
		if err != nil {
			if !cloudevent.IsInvalid(err) {
				t.Fatalf("decode error is not a rejection: %v", err)
			}
			return
		}
		u, err := ParseUsage(ev, received, catalogue{})
		if err != nil {
			if !cloudevent.IsInvalid(err) {
				t.Fatalf("parse error is not a rejection: %v", err)
			}
			return
		}
		if u.ID == "" || u.Calls < 1 || u.Calls > MaxCallsPerEvent || ValidateAccount(u.Account) != nil ||
			(catalogue{}).CheckService(u.Service, u.Time) != nil || u.Time.After(received.Add(MaxClockSkew)) {
			t.Fatalf("accepted an invalid usage event: %+v from %q", u, raw)
		}
	})
}

// FuzzDecodeUsageMatchesParseUsage: the fast decoder answers exactly as the reflective one, for
// every input: the same usage, or the same rejection.
func FuzzDecodeUsageMatchesParseUsage(f *testing.F) {
	f.Add([]byte(event("e1", "2026-10-05T12:00:00Z", `{"account":"acme","service":"image-tagging","calls":3}`)))
	f.Add([]byte(event("e1", "2026-10-05T12:00:00Z", `{"account":"acme","service":"image-tagging"}`)))
	f.Add([]byte(`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","recordedat":"2026-10-05T12:00:00Z","datacontenttype":"application/json","data":{"calls":1000000,"service":"old-service","account":"a"}}`))
	f.Add([]byte(`{"id":"x","ID":"y","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","data":{"account":"a","service":"image-tagging","calls":01}}`))
	f.Add([]byte(`{"id":"x","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","data":{"account":"a\u0062","service":"image-tagging","calls":1e2}} `))
	for _, raw := range producerShapes {
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, ferr := DecodeUsage(raw, received, catalogue{})
		ev, serr := cloudevent.Decode(raw)
		var slow Usage
		if serr == nil {
			slow, serr = ParseUsage(ev, received, catalogue{})
		}
		if (ferr == nil) != (serr == nil) || (ferr != nil && ferr.Error() != serr.Error()) {
			t.Fatalf("fast: %v; reflective: %v; input %q", ferr, serr, raw)
		}
		if ferr != nil && serr != nil && fast.ID != ev.ID {
			t.Fatalf("rejected with id %q; the envelope says %q; input %q", fast.ID, ev.ID, raw)
		}
		if ferr == nil && (fast.ID != slow.ID || fast.Account != slow.Account || fast.Service != slow.Service || fast.Calls != slow.Calls || !fast.Time.Equal(slow.Time)) {
			t.Fatalf("fast %+v; reflective %+v; input %q", fast, slow, raw)
		}
		// A replayed log line: received at its recordedat, else at its time.
		if logged, recorded, ok := DecodeLoggedUsage(raw, catalogue{}); ok {
			ev, err := cloudevent.Decode(raw)
			if err != nil {
				t.Fatalf("fast accepted a line the reflective decoder refuses (%v): %q", err, raw)
			}
			want := ev.RecordedAt
			if want.IsZero() {
				want = ev.Time
			}
			slow, err := ParseUsage(ev, want, catalogue{})
			if err != nil || !recorded.Equal(want) || logged.ID != slow.ID || logged.Account != slow.Account || logged.Service != slow.Service ||
				logged.Calls != slow.Calls || !logged.Time.Equal(slow.Time) {
				t.Fatalf("logged fast %+v at %v; reflective %+v at %v (%v); input %q", logged, recorded, slow, want, err, raw)
			}
		}
	})
}

// producerShapes are usage events as CloudEvents producers write them: the SDKs' attribute
// order, subject, extensions, escapes, JSON media types with parameters; and spellings the
// the fast path leaves to the reflective decoder (a key in capitals, a duplicate, data_base64,
// extensions CloudEvents does not allow).
var producerShapes = []string{
	`{"specversion":"1.0","id":"e1","source":"//gw.example/eu-1","type":"tally.usage.v1","subject":"acme","datacontenttype":"application/json","time":"2026-10-05T12:00:00.123456789Z","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{"account":"acme","service":"image-tagging","calls":3}}`,
	`{"data":{"calls":2,"service":"image-tagging","account":"acme"},"time":"2026-10-05T20:00:00+08:00","type":"tally.usage.v1","id":"e2","source":"https:\/\/gw.example\/eu-1","specversion":"1.0","datacontenttype":"application/json; charset=utf-8"}`,
	`{"specversion":"1.0","id":"caf\u00e9-\ud83d\ude00-\"q\"","source":"gw","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","dataschema":"https://example.com/usage.json","sequence":42,"sampled":true,"ratio":0.5,"nothing":null,"data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"ü-ß","source":"Zürich","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","datacontenttype":"application/cloudevents+json","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e12","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","tags":["a",{"b":null}],"trace_id":"x","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e14","type":"tally.usage.v1","time":"2026-10-05T1:00:00,5+24:00","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e13","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","subject":7,"data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e3","source":"gw","type":"tally.usage.v1","Subject":"acme","time":"2026-10-05T12:00:00Z","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e4","source":"gw","type":"tally.usage.v1","ID":"e5","time":"2026-10-05T12:00:00Z","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e6","id":"e7","source":"gw","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e8","source":"gw","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","data_base64":"e30=","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"e9\u0007","source":"gw\u007f","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","datacontenttype":"text/plain","data":{"account":"acme","service":"image-tagging"}}`,
	`{"specversion":"1.0","id":"\ud800","source":"gw","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","ext":"\ud800","data":{"account":"acme","service":"image-tagging"}}`,
	"{\"specversion\":\"1.0\",\"id\":\"e10\",\"type\":\"tally.usage.v1\",\"time\":\"2026-10-05T12:00:00Z\",\"x\":\"\xff\",\"data\":{\"account\":\"acme\",\"service\":\"image-tagging\"}}",
	`{"specversion":"1.0","id":"e11","type":"tally.usage.v1","time":"2026-10-05T12:00:00Z","deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"data":{"account":"acme","service":"image-tagging"}}`,
}

// The shapes real producers send take the fast path (else the sink and replay crawl on them).
func TestProducerShapesTakeTheFastPath(t *testing.T) {
	for i, raw := range producerShapes[:4] {
		if _, _, ok := fastUsage([]byte(raw), received, catalogue{}); !ok {
			t.Errorf("shape %d goes the reflective way: %s", i, raw)
		}
	}
}

func BenchmarkDecodeUsage(b *testing.B) {
	shapes := map[string][]byte{
		"minimal": []byte(event("req-000123456", "2026-10-05T11:59:00.123Z", `{"account":"acct-004211","service":"image-tagging","calls":3}`)),
		"sdk":     sdkUsage(b, "req-000123456"), // subject, dataschema, three extensions
	}
	for name, raw := range shapes {
		b.Run(name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := DecodeUsage(raw, received, catalogue{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/reflective", func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				ev, _ := cloudevent.Decode(raw)
				if _, err := ParseUsage(ev, received, catalogue{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Whatever an id, account or service holds, Encode writes JSON that DecodeUsage reads back as the
// same usage, or rejects for the field at fault: never a different event.
func FuzzEncodedUsageDecodes(f *testing.F) {
	f.Add("ev-1", "acme", "image-tagging", int64(3))
	f.Add(`"},"x":1`, `a"b`, "image-tagging", int64(1))
	f.Add("\u2028<&>\\", "acme", "image-tagging\x00", int64(1_000_001))
	f.Fuzz(func(t *testing.T, id, account, service string, calls int64) {
		at := received.Add(-time.Hour)
		raw, err := Encode(Event{ID: id, Source: "fuzz", Type: UsageType, Time: at, Data: UsageData{Account: account, Service: service, Calls: calls}})
		if err != nil {
			if utf8.ValidString(id) {
				t.Fatalf("id %q: %v", id, err)
			}
			return // JSON cannot carry it unaltered, so Encode refuses it
		}
		u, err := DecodeUsage(raw, received, catalogue{})
		if err != nil {
			var ce *cloudevent.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s: %v is not a reason for the sender", raw, err)
			}
			return
		}
		if u.ID != id || u.Account != account || u.Service != service || u.Calls != calls || !u.Time.Equal(at) {
			t.Fatalf("%s decoded as %+v", raw, u)
		}
	})
}
