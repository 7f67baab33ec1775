package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/kafkax"
	"github.com/tally-billing/tally/internal/testinfra"
	"github.com/tally-billing/tally/settle"
	"github.com/tally-billing/tally/settle/billsink"
)

// GET /v1/accounts/{a}/usage prices the running totals the way the bill will: the free pack, then
// prepaid packs soonest-expiring first, carried over from September, read back from usage_events
// over HTTP (the protocol the roles use).
func TestUsageAPIPricesPrepaidPacks(t *testing.T) {
	e := setup(t, 1)
	_, accountsTopic := testinfra.Topic(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const acct = "acme"
	term := func(typ string, data map[string]any) kafka.Message {
		raw, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": fmt.Sprint(data), "source": "console", "type": typ,
			"time": "2026-09-01T00:00:00+08:00", "data": data})
		return kafka.Message{Key: []byte(acct), Value: raw}
	}
	pack := func(id string, calls int, from, until string) kafka.Message {
		return term(contract.PackPurchasedType, map[string]any{"account": acct, "service": "vehicle-recognition", "pack_id": id,
			"calls": calls, "valid_from": from, "valid_until": until})
	}
	price := func(from, unit string) kafka.Message { // contract prices of a service without calls: the usage answers stay as they are
		return term(contract.PriceOverrideType, map[string]any{"account": acct, "service": "smart-cropping", "effective_from": from,
			"tiers": []map[string]any{{"from_calls": 0, "unit_price": unit}}})
	}
	testinfra.Produce(t, e.brokers, accountsTopic, []kafka.Message{
		term(contract.ActivatedType, map[string]any{"account": acct, "service": "vehicle-recognition"}),
		term(contract.ActivatedType, map[string]any{"account": acct, "service": "image-tagging"}),
		pack("p1", 25_000, "2026-09-20T00:00:00+08:00", "2026-10-15T00:00:00+08:00"),
		pack("p2", 40_000, "2026-10-10T00:00:00+08:00", "2026-12-01T00:00:00+08:00"),
		pack("p3", 1_000, "2026-10-28T00:00:00+08:00", "2026-11-30T00:00:00+08:00"),
		pack("p1", 99_000, "2026-09-20T00:00:00+08:00", "2026-12-15T00:00:00+08:00"), // a pack_id counts once
		price("2026-09-01T00:00:00+08:00", "1.5"),
		price("2026-10-01T00:00:00+08:00", "1.2"),
		price("2026-10-15T00:00:00+08:00", "1.1"), // mid-month: November's bill on
		price("2026-11-01T00:00:00+08:00", "0.9"),
	})
	var usage []kafka.Message
	for i, u := range []struct {
		service, at string
		calls       int
	}{
		{"vehicle-recognition", "2026-09-05T10:00:00+08:00", 8_000},  // free
		{"vehicle-recognition", "2026-09-25T10:00:00+08:00", 12_000}, // 2,000 free, 10,000 from p1
		{"vehicle-recognition", "2026-10-02T10:00:00+08:00", 10_000}, // free
		{"vehicle-recognition", "2026-10-05T10:00:00+08:00", 6_000},  // p1 (9,000 left)
		{"vehicle-recognition", "2026-10-12T10:00:00+08:00", 20_000}, // p1 expires first: 9,000, then p2 11,000
		{"vehicle-recognition", "2026-10-20T10:00:00+08:00", 5_000},  // p2 (24,000 left)
		{"vehicle-recognition", "2026-10-25T10:00:00+08:00", 30_000}, // p2 24,000, 6,000 billed
		{"image-tagging", "2026-10-03T10:00:00+08:00", 1_000_000},
	} {
		raw := contract.MustEncode(contract.Event{ID: fmt.Sprintf("u%d", i), Source: "gw", Type: contract.UsageType, Time: at(u.at),
			Data: contract.UsageData{Account: acct, Service: u.service, Calls: int64(u.calls)}})
		usage = append(usage, kafka.Message{Key: []byte(acct), Value: raw})
	}
	usage = append(usage, usage[4]) // a gateway retry
	testinfra.Produce(t, e.brokers, e.topic, usage)

	startSink(t, e, ctx)
	// Two open months: records are received now (November 2026 or later), so September is
	// closed: not folded, answered from the exact recount of usage_events.
	w, err := worker.New(worker.Config{Brokers: e.brokers, Topic: e.topic, Group: e.group, Window: 1000, OpenMonths: 2, CheckpointInterval: 100 * time.Millisecond,
		SessionTimeout: 6 * time.Second, Location: shanghai, Services: settle.DefaultCatalogue()},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), worker.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = w.Run(ctx) }()
	accounts := worker.NewAccounts(kafkax.Plaintext(e.brokers), accountsTopic, settle.DefaultCatalogue(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	go func() { _ = accounts.Run(ctx) }()
	waitCaughtUp(t, e)

	httpCfg := e.cfg
	httpCfg.Protocol, httpCfg.Addr = clickhouse.HTTP, testinfra.ClickHouseHTTPAddr()
	overHTTP, err := chx.Open(ctx, httpCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer overHTTP.Close()
	now := at("2026-10-26T09:00:00+08:00")
	api := (&worker.API{Worker: w, Accounts: accounts, Usage: overHTTP, Now: func() time.Time { return now },
		Billing: settle.Config{Catalogue: settle.DefaultCatalogue(), Location: shanghai}}).Handler()
	get := func(period string) (int, worker.UsageResponse) {
		rec := httptest.NewRecorder()
		req1 := loopbackGet("/v1/accounts/" + acct + "/usage?period=" + period)
		api.ServeHTTP(rec, req1)
		conforms(t, req1, rec)
		var resp worker.UsageResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &resp)
		return rec.Code, resp
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, resp := get("2026-10")
		if code == http.StatusOK && len(resp.Services) == 2 && len(accounts.Terms(acct, "vehicle-recognition")) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage API not ready: %d %+v", code, resp)
		}
		time.Sleep(50 * time.Millisecond)
	}

	code, oct := get("2026-10")
	want := []worker.ServiceUsage{
		{Service: "image-tagging", Calls: 1_000_000, Activated: true, FreeCallsLeft: 0, BillableCalls: 990_000, Tier: 2, UnitPrice: "2.2", AmountSoFar: "2178.00"},
		// 71,000 calls: 10,000 free; p1 6,000 + 9,000, p2 11,000 + 5,000 + 24,000; 6,000 × 3 / 1000.
		// p3 starts on the 28th with its 1,000 calls, still usable this month.
		{Service: "vehicle-recognition", Calls: 71_000, Activated: true, FreeCallsLeft: 0, PrepaidCalls: 55_000, PrepaidCallsLeft: 1_000,
			BillableCalls: 6_000, Tier: 1, UnitPrice: "3", AmountSoFar: "18.00"},
	}
	if code != http.StatusOK || fmt.Sprint(oct.Services) != fmt.Sprint(want) {
		t.Fatalf("October: %d\n got %+v\nwant %+v", code, oct.Services, want)
	}
	// GET terms: the packs as of the 26th, what they have left this month, the contract prices
	// billing takes for October (the latest begun by October 1) and those scheduled.
	rec := httptest.NewRecorder()
	req2 := loopbackGet("/v1/accounts/" + acct + "/terms")
	api.ServeHTTP(rec, req2)
	conforms(t, req2, rec)
	var terms worker.TermsResponse
	_ = json.Unmarshal(rec.Body.Bytes(), &terms)
	wantTerms := `[{image-tagging true 2026-09-01T00:00:00+08:00 [] 0 []} ` +
		`{smart-cropping false  [] 0 [{2026-09-01T00:00:00+08:00 [{0 1.5}] superseded} {2026-10-01T00:00:00+08:00 [{0 1.2}] in_effect} ` +
		`{2026-10-15T00:00:00+08:00 [{0 1.1}] scheduled} {2026-11-01T00:00:00+08:00 [{0 0.9}] scheduled}]} ` +
		`{vehicle-recognition true 2026-09-01T00:00:00+08:00 [{p1 25000 2026-09-20T00:00:00+08:00 2026-10-15T00:00:00+08:00 expired} ` +
		`{p2 40000 2026-10-10T00:00:00+08:00 2026-12-01T00:00:00+08:00 valid} {p3 1000 2026-10-28T00:00:00+08:00 2026-11-30T00:00:00+08:00 upcoming}] 1000 []}]`
	if rec.Code != http.StatusOK || fmt.Sprint(terms.Services) != wantTerms {
		t.Fatalf("terms: %d\n got %v\nwant %s", rec.Code, terms.Services, wantTerms)
	}
	// The history: the quarter scenario's billing topic, copied by `tally billsink`.
	copyBilling(t, e, "../../settle/testdata/scenarios/quarter.golden.jsonl")
	rec = httptest.NewRecorder()
	req3 := loopbackGet("/v1/accounts/" + acct + "/history?bills=2")
	api.ServeHTTP(rec, req3)
	conforms(t, req3, rec)
	var history worker.History
	_ = json.Unmarshal(rec.Body.Bytes(), &history)
	var summary []string
	for _, b := range history.Bills {
		summary = append(summary, fmt.Sprintf("%s %s %v %v", b.Period, b.Total, b.Lines, b.Adjustments))
	}
	for _, h := range history.Holds {
		summary = append(summary, fmt.Sprintf("%s %s %s %s %s %s", h.At, h.Kind, h.HoldID, h.Amount, h.ForPeriod, h.BasisPeriod))
	}
	wantHistory := "2026-10 0.00 [{image-tagging true 5000 5000 0 0 1 2.5 0.00}] []|" +
		"2026-09 -147.30 [{image-tagging true 20000 10000 0 10000 1 2.5 25.00} {vehicle-recognition true 50000 10000 0 40000 1 3 120.00}] [{2026-08 image-tagging 999001 1001001 -292.30}]|" +
		"2026-11-01T00:00:00+08:00 released hold:acme:2026-10 145.00  |" +
		"2026-10-01T00:00:00+08:00 requested hold:acme:2026-10 145.00 2026-10 2026-09|" +
		"2026-10-01T00:00:00+08:00 released hold:acme:2026-09 2472.50  |" +
		"2026-09-01T00:00:00+08:00 requested hold:acme:2026-09 2472.50 2026-09 2026-08"
	if rec.Code != http.StatusOK || strings.Join(summary, "|") != wantHistory || len(history.StatusChanges) != 0 {
		t.Fatalf("history: %d\n got %s (status changes %v)\nwant %s", rec.Code, strings.Join(summary, "|"), history.StatusChanges, wantHistory)
	}
	rec = httptest.NewRecorder()
	req4 := loopbackGet("/v1/accounts/initech/history")
	api.ServeHTTP(rec, req4)
	conforms(t, req4, rec)
	history = worker.History{}
	_ = json.Unmarshal(rec.Body.Bytes(), &history)
	if got := fmt.Sprint(history.StatusChanges); got != "[{resumed hold_placed 2026-09-03T12:00:05+08:00} {suspended hold_failed 2026-09-01T02:00:00+08:00}]" {
		t.Fatalf("initech's status history: %s", got)
	}
	// The account page, rendered by a real browser: a bar per service, the total so far, the
	// terms, the last bills with their lines and adjustments, the holds.
	checkAccountPage(t, api, acct, []string{
		`<div class="bill" data-bill="bill:acme:2026-09">`,
		`<span class="bill-total">-147.30</span> CNY`,
		`<td>vehicle-recognition</td><td>50000</td><td>10000</td><td>0</td><td>40000</td><td>1</td><td>3</td><td>120.00</td>`,
		`adjusts 2026-08: 999001 → 1001001 calls</td><td>-292.30</td>`,
		`<td>hold:acme:2026-10</td><td>requested for 2026-10 (from 2026-09)</td><td>145.00</td>`,
	})
	checkAccountPage(t, api, acct, []string{
		`<h1 id="account">acme</h1>`,
		`data-service="image-tagging" data-calls="1000000"`,
		`data-service="vehicle-recognition" data-calls="71000"`,
		`aria-label="71000 calls: 10000 free, 55000 prepaid, 6000 billed"`,
		`title="tier 2 from 1,000,000"`,
		`<span id="total">2196.00</span> CNY`,
		`<td>pack p2</td><td>40000 calls, 2026-10-10T00:00:00+08:00 – 2026-12-01T00:00:00+08:00</td><td>valid</td>`,
		`≥0: 1.2</td><td>in_effect</td>`,
	})
	if totals, _, closed := w.AccountUsage(acct, contract.Period{Year: 2026, Month: 9}); !closed || len(totals) != 0 {
		t.Fatalf("September: running totals %v kept (closed %t)", totals, closed)
	}
	if _, err := worker.Reconcile(ctx, e.conn, e.group, e.topic, contract.Period{Year: 2026, Month: 9}); !errors.Is(err, worker.ErrClosedMonth) {
		t.Fatalf("reconciling a closed month: %v", err)
	}
	// September is over: p1 had 15,000 calls left at its end (p2 and p3 start later).
	_, sep := get("2026-09")
	wantSep := []worker.ServiceUsage{{Service: "vehicle-recognition", Calls: 20_000, Activated: true, PrepaidCalls: 10_000, PrepaidCallsLeft: 15_000,
		Tier: 1, UnitPrice: "3", AmountSoFar: "0.00"}}
	if fmt.Sprint(sep.Services) != fmt.Sprint(wantSep) {
		t.Fatalf("September:\n got %+v\nwant %+v", sep.Services, wantSep)
	}
	// November has no calls yet: the packs still valid show what is left of them.
	_, nov := get("2026-11")
	wantNov := []worker.ServiceUsage{{Service: "vehicle-recognition", Activated: true, FreeCallsLeft: 10_000, PrepaidCallsLeft: 1_000, UnitPrice: "3", AmountSoFar: "0.00", Tier: 1}}
	if fmt.Sprint(nov.Services) != fmt.Sprint(wantNov) {
		t.Fatalf("November:\n got %+v\nwant %+v", nov.Services, wantNov)
	}
}

// copyBilling puts the billing events of a golden file on a topic of their own and copies them
// into the test's database with the billsink, as `tally billsink` would.
func copyBilling(t *testing.T, e *env, golden string) {
	t.Helper()
	raw, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	brokers, topic := testinfra.Topic(t, 2, nil)
	var msgs []kafka.Message
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var ev struct{ Subject string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.Subject), Value: []byte(line)})
	}
	testinfra.Produce(t, brokers, topic, msgs)
	group := testinfra.UniqueName(t, "billsink")
	s, err := billsink.New(billsink.Config{Brokers: brokers, Topic: topic, Group: group, BatchRows: 100, FlushInterval: 50 * time.Millisecond, SessionTimeout: 6 * time.Second},
		e.conn, slog.New(slog.NewTextHandler(io.Discard, nil)), billsink.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testinfra.WaitForOffsets(t, e.conn, testinfra.EndOffsets(t, brokers, topic, 2), time.Minute,
		"SELECT kafka_partition, max(next_offset) FROM sink_progress WHERE consumer = ? GROUP BY kafka_partition", group)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
