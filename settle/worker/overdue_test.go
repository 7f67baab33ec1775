package worker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/settle"
)

// A settlement still waiting at the end of day 3 is overdue: metric, readiness.
func TestOverdueAfterDayThree(t *testing.T) {
	loc, _ := time.LoadLocation("Asia/Shanghai")
	m := NewMetrics(prometheus.NewRegistry())
	w, err := New(Config{Brokers: []string{"127.0.0.1:1"}, UsageTopic: "u", AccountsTopic: "a", LedgerTopic: "l", BillingTopic: "b", StatusTopic: "s",
		JournalTopic: "j", SinkGroup: "g", Billing: settle.Config{Catalogue: settle.DefaultCatalogue(), Location: loc, HoldRatio: decimal.NewFromInt(1)},
		Grace: time.Hour, Clock: time.Now, PollInterval: time.Second}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	if err != nil {
		t.Fatal(err)
	}
	s := time.Date(2026, 11, 1, 1, 0, 0, 0, loc)
	if w.overdue(s, time.Date(2026, 11, 3, 23, 59, 59, 0, loc)) || w.Ready(t.Context()) != nil || testutil.ToFloat64(m.Overdue) != 0 {
		t.Fatal("overdue on day 3")
	}
	if !w.overdue(s, time.Date(2026, 11, 4, 0, 0, 0, 0, loc)) || w.Ready(t.Context()) == nil || testutil.ToFloat64(m.Overdue) != 1 {
		t.Fatal("not overdue after day 3")
	}
}
