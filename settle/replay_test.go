package settle

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tally-billing/tally/contract"
)

// The replay clock is the largest recordedat; a line that moves it past a settlement instant
// runs the settlement first, so that line is late.
func TestReplayClockAndLateness(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.lateUsage("u2", "a", "image-tagging", 2_000, "2026-10-31T23:00:00+08:00", "2026-10-31T23:59:59+08:00") // before the instant: in the bill
	b.lateUsage("u3", "a", "image-tagging", 2_000, "2026-10-31T23:30:00+08:00", "2026-11-01T00:00:00+08:00") // at the instant: late
	_, evs, _ := replayLog(t, b.String(), ReplayOptions{})
	if got := lineOf(t, bills(t, evs)["bill:a:2026-10"], "image-tagging").Calls; got != 4_000 {
		t.Fatalf("October calls %d; want 4,000 (the call recorded at the settlement instant is late)", got)
	}
	// No --until: November is not settled, so the late call waits.
	if len(evs) != 2 {
		t.Fatalf("emitted %v", types(evs))
	}
}

func TestReplayGraceDelaysSettlement(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.lateUsage("u2", "a", "image-tagging", 2_000, "2026-10-31T23:30:00+08:00", "2026-11-01T01:00:00+08:00")
	opts := ReplayOptions{Grace: 2 * time.Hour}
	_, evs, _ := replayLog(t, b.String(), opts)
	if len(evs) != 0 {
		t.Fatalf("settled before the grace period ended: %v", types(evs))
	}
	opts.Until = mustTime("2026-11-01T02:00:00+08:00")
	_, evs, _ = replayLog(t, b.String(), opts)
	if got := lineOf(t, bills(t, evs)["bill:a:2026-10"], "image-tagging").Calls; got != 4_000 {
		t.Fatalf("October calls %d; want 4,000 (recorded within the grace period)", got)
	}
	if evs[0].Time != "2026-11-01T02:00:00+08:00" {
		t.Fatalf("settlement time %s; want the end of the grace period", evs[0].Time)
	}
}

// Settlement covers every month from the earliest seen, oldest first, even empty ones: a hold
// requested for a month without usage is released at that month's settlement.
func TestReplaySettlesEveryMonthFromTheEarliest(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-08-05T00:00:00+08:00")
	b.usage("u2", "a", "image-tagging", 2_000, "2026-11-05T00:00:00+08:00")
	_, evs, _ := replayLog(t, b.String(), ReplayOptions{})
	want := []string{
		"tally.bill.issued.v1:bill:a:2026-08",
		"tally.hold.requested.v1:hold:a:2026-09",
		"tally.hold.released.v1:hold:a:2026-09",
	}
	if got := types(evs); !reflect.DeepEqual(got, want) {
		t.Fatalf("emitted %v; want %v", got, want)
	}
}

func TestReplayRejectsBadLinesAndChangesNothing(t *testing.T) {
	var b logBuilder
	b.usage("ok", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	good := b.String()
	bad := []struct{ line, reason string }{
		{`not json`, "not a JSON CloudEvent"},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"nope","calls":1}}`, `unknown service "nope"`},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a b","service":"image-tagging"}}`, "outside [A-Za-z0-9._-]"},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging","calls":0}}`, "outside 1..1000000"},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging","calls":1.5}}`, "not an integer"},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging","calls":"3"}}`, "not an integer"},
		{`{"specversion":"1.0","id":"","type":"tally.usage.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging"}}`, "id is missing"},
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2026-12-05T00:00:00+08:00","recordedat":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging"}}`, "ahead of the receiving clock"},
		{`{"specversion":"1.0","id":"x","type":"tally.unknown.v1","time":"2026-10-05T00:00:00+08:00","data":{}}`, "not an input"},
		{`{"specversion":"1.0","id":"x","type":"tally.ledger.recharged.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","amount":12.5}}`, "data:"},
		{`{"specversion":"1.0","id":"x","type":"tally.pack.purchased.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-enhancement","pack_id":"p","calls":5,"valid_from":"2026-10-01T00:00:00Z","valid_until":"2026-11-01T00:00:00Z"}}`, "free beta"},
		{`{"specversion":"1.0","id":"x","type":"tally.price.override.v1","time":"2026-10-05T00:00:00+08:00","data":{"account":"a","service":"image-tagging","effective_from":"2026-10-01T00:00:00Z","tiers":[{"from_calls":5,"unit_price":"1"}]}}`, "first tier must start at 0"},
		// A far-future recordedat on a rejected line must not move the clock (no settlement).
		{`{"specversion":"1.0","id":"x","type":"tally.usage.v1","time":"2027-10-05T00:00:00+08:00","recordedat":"2027-10-05T00:00:00+08:00","data":{"account":"a","service":"nope"}}`, "unknown service"},
	}
	log := good
	for _, c := range bad {
		log += c.line + "\n"
	}
	out, evs, rej := replayLog(t, log, ReplayOptions{})
	if out != "" || len(evs) != 0 {
		t.Fatalf("bad lines changed the output: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(rej), "\n")
	if len(lines) != len(bad) {
		t.Fatalf("%d rejections for %d bad lines:\n%s", len(lines), len(bad), rej)
	}
	for i, l := range lines {
		var r Rejection
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatal(err)
		}
		if r.Line != i+2 || !strings.Contains(r.Reason, bad[i].reason) {
			t.Errorf("rejection %d = %+v; want line %d with %q", i, r, i+2, bad[i].reason)
		}
	}
	// The good line alone gives the same bills as the good line among the bad ones.
	goodOut, _, _ := replayLog(t, good, until("2026-11-01T00:00:00+08:00"))
	allOut, _, _ := replayLog(t, log, until("2026-11-01T00:00:00+08:00"))
	if goodOut != allOut || goodOut == "" {
		t.Fatal("bad lines changed the bills")
	}
}

func TestReplayRejectsOverlongLinesAndGoesOn(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	log := strings.Repeat("x", 200_000) + "\n" + b.String()
	var out, rej bytes.Buffer
	stats, err := Replay(strings.NewReader(log), &out, &rej, defaultConfig(), ReplayOptions{MaxLineBytes: 1000, Until: mustTime("2026-11-01T00:00:00+08:00")})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Rejected != 1 || !strings.Contains(rej.String(), "longer than 1000 bytes") || stats.Accepted != 1 || !strings.Contains(out.String(), "bill:a:2026-10") {
		t.Fatalf("stats %+v rejections %q", stats, rej.String())
	}
}

// A clock tick only moves the clock: it runs the settlements due at its recordedat.
func TestReplayClockTick(t *testing.T) {
	var b logBuilder
	b.usage("u1", "a", "image-tagging", 2_000, "2026-10-05T00:00:00+08:00")
	b.ev(contract.ClockTickType, "tick-1", "2026-11-01T00:00:00+08:00", "", map[string]any{})
	_, evs, rej := replayLog(t, b.String(), ReplayOptions{})
	if rej != "" || len(evs) != 2 || evs[0].ID != "tally.bill.issued.v1:bill:a:2026-10" {
		t.Fatalf("emitted %v, rejected %q", types(evs), rej)
	}
}
