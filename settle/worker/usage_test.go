package worker

import (
	"testing"
	"time"

	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/internal/cloudevent"
	"github.com/tally-billing/tally/settle"
)

// A stored usage row becomes a line the billing core reads back exactly, whatever its id holds.
func TestUsageLineRoundTrips(t *testing.T) {
	at := time.Date(2026, 10, 5, 2, 0, 0, 123456789, time.UTC)
	received := at.Add(time.Second)
	for _, id := range []string{"plain", "quote\"back\\slash", "ctl\x01\x7f", "ünïcødé-请求", "<html>&"} {
		u := ingest.Usage{ID: id, Account: "acme", Service: "image-tagging", Calls: 7, Time: at}
		ev, err := cloudevent.Decode(UsageLine(u, received))
		if err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		got, err := ingest.ParseUsage(ev, ev.RecordedAt, settle.DefaultCatalogue())
		if err != nil || got.ID != id || got.Calls != 7 || !got.Time.Equal(at) || !ev.RecordedAt.Equal(received) {
			t.Fatalf("%q: got %+v (recorded %v), err %v", id, got, ev.RecordedAt, err)
		}
	}
}
