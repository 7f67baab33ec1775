package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v2"

	aggworker "github.com/tally-billing/tally/aggregate/worker"
	"github.com/tally-billing/tally/ingest"
	"github.com/tally-billing/tally/ingest/sink"
	"github.com/tally-billing/tally/internal/telemetry"
	"github.com/tally-billing/tally/settle"
	"github.com/tally-billing/tally/settle/billsink"
	settleworker "github.com/tally-billing/tally/settle/worker"
)

// The dashboard and the alert rules ask Prometheus for Tally's metrics by name: a renamed metric
// or label would leave a panel empty and an alert silent, and nothing else would tell. Every
// metric they name must be one a role registers, and every label they group or select by one
// of its labels (or a target label Prometheus adds).
func TestDashboardAndAlertsNameRealMetrics(t *testing.T) {
	known := roleMetrics(t)
	var exprs []string
	raw, err := os.ReadFile("../../deploy/grafana/tally.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana/tally.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	raw, err = os.ReadFile("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct{ Expr string }
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("deploy/prometheus/alerts.yml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	if len(exprs) < 30 {
		t.Fatalf("read %d expressions from the dashboard and the rules; the files' shape changed?", len(exprs))
	}
	metricName := regexp.MustCompile(`\b(?:tally|go|process)_[a-z0-9_]+\b`)
	grouping := regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	selector := regexp.MustCompile(`\{([^}]*)\}`)
	target := map[string]bool{"instance": true, "job": true, "le": true}
	for _, e := range exprs {
		labels := map[string]bool{}
		for _, name := range metricName.FindAllString(e, -1) {
			ls, ok := known[name]
			if !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} { // a histogram's series
					if base, cut := strings.CutSuffix(name, suffix); cut {
						ls, ok = known[base]
					}
				}
			}
			if !ok {
				t.Errorf("%s names %s, which no role registers", e, name)
			}
			for l := range ls {
				labels[l] = true
			}
		}
		var used []string
		for _, m := range grouping.FindAllStringSubmatch(e, -1) {
			used = append(used, strings.Split(m[1], ",")...)
		}
		for _, m := range selector.FindAllStringSubmatch(e, -1) {
			for _, matcher := range strings.Split(m[1], ",") {
				used = append(used, regexp.MustCompile(`[=!~]`).Split(matcher, 2)[0])
			}
		}
		for _, l := range used {
			if l = strings.TrimSpace(l); l != "" && !labels[l] && !target[l] {
				t.Errorf("%s uses label %q, which its metrics do not have", e, l)
			}
		}
	}
}

// roleMetrics are the metrics every role registers, with their labels: the shared registry's
// (Go runtime, process, build) and each role's own.
func roleMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	rec := &descRecorder{metrics: map[string]map[string]bool{}}
	families, err := telemetry.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		rec.metrics[f.GetName()] = labels
	}
	ingest.NewMetrics(rec)
	sink.NewMetrics(rec)
	aggworker.NewMetrics(rec)
	settleworker.NewMetrics(rec)
	billsink.NewMetrics(rec)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, err := ingest.NewReplicaWatch(ingest.ReplicaWatchConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "u", Interval: time.Second}, log, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := ingest.NewAccountsAPI(ingest.AccountsConfig{PublishTimeout: time.Second, Registry: rec}, settle.DefaultCatalogue(), nil, log, time.Now); err != nil {
		t.Fatal(err)
	}
	return rec.metrics
}

// descRecorder is a prometheus.Registerer that keeps the name and labels of what it is given.
type descRecorder struct{ metrics map[string]map[string]bool }

var descShape = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descShape.FindStringSubmatch(d.String())
		if m == nil {
			continue
		}
		labels := map[string]bool{}
		for _, l := range strings.Split(m[2], ",") {
			if l != "" {
				labels[l] = true
			}
		}
		r.metrics[m[1]] = labels
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *descRecorder) Unregister(prometheus.Collector) bool { return true }
