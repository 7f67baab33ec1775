package settle

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDefaultCatalogueMatchesSpec(t *testing.T) {
	c := DefaultCatalogue()
	if c.Currency != "CNY" || c.FreeCallsPerMonth != 10_000 || !c.ChargingStarts.Equal(time.Date(2020, 1, 1, 0, 0, 0, 0, time.FixedZone("", 8*3600))) {
		t.Fatalf("catalogue header %s %d %s", c.Currency, c.FreeCallsPerMonth, c.ChargingStarts)
	}
	want := map[string]string{
		"image-tagging":              "0:2.5 1000000:2.2 3000000:2 15000000:1.5",
		"product-recognition":        "0:2.5 1000000:2.2 3000000:2 15000000:1.5",
		"product-recognition-wechat": "0:3.5 1000000:3.2 3000000:2.8 15000000:2.2",
		"celebrity-recognition":      "0:2 1000000:1.5 3000000:1.2 15000000:1",
		"vehicle-recognition":        "0:3 1000000:2.5 3000000:2 15000000:1.5",
		"smart-cropping":             "0:2 1000000:1.5 3000000:1.2 15000000:1",
		"image-quality":              "0:3 1000000:2.5 3000000:2 15000000:1.5",
		"image-enhancement":          "beta",
	}
	month := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range c.ServiceIDs() {
		s := c.ListSchedule(id, month)
		var got []string
		if s.Free {
			got = append(got, "beta")
		}
		for _, tier := range s.Tiers {
			got = append(got, strings.Join([]string{strconv.FormatInt(tier.FromCalls, 10), tier.UnitPrice.String()}, ":"))
		}
		if strings.Join(got, " ") != want[id] {
			t.Errorf("%s: %s; want %s", id, strings.Join(got, " "), want[id])
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("missing services: %v", want)
	}
}

func TestLoadCatalogueNamesEveryProblem(t *testing.T) {
	bad := `{"currency":"","charging_starts":"soon","free_calls_per_month":-1,"services":[
		{"id":"Bad_ID","prices":[]},
		{"id":"ok","prices":[{"tiers":[{"from_calls":5,"unit_price":"x"},{"from_calls":0,"unit_price":"-1"}]}]},
		{"id":"ok","prices":[{"beta":true,"tiers":[{"from_calls":0,"unit_price":"1"}]}]},
		{"id":"dates","retired_at":"2020-01-01T00:00:00Z","available_from":"2021-01-01T00:00:00Z",
		 "prices":[{"effective_from":"2022-01-01T00:00:00Z","beta":true},{"effective_from":"2021-01-01T00:00:00Z","tiers":[{"unit_price":""}]}]}]}`
	_, err := LoadCatalogue(strings.NewReader(bad))
	if err == nil {
		t.Fatal("bad catalogue accepted")
	}
	for _, want := range []string{
		"currency: is missing",
		"charging_starts: \"soon\" is not RFC 3339",
		"free_calls_per_month: must not be negative",
		"services[0].id: \"Bad_ID\"",
		"services[0].prices: is empty",
		"services[1].prices[0].tiers[0].from_calls: the first tier must start at 0",
		"services[1].prices[0].tiers[0].unit_price: \"x\" is not a decimal",
		"services[1].prices[0].tiers[1].from_calls: 0 must be greater",
		"services[1].prices[0].tiers[1].unit_price: -1 is negative",
		"services[2].id: \"ok\" appears twice",
		"services[2].prices[0].tiers: a beta version is free",
		"services[3].retired_at: must be after available_from",
		"services[3].prices[1].effective_from: must be after the previous version's",
		"services[3].prices[1].tiers[0].from_calls: is missing",
		"services[3].prices[1].tiers[0].unit_price: is missing",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if _, err := LoadCatalogue(strings.NewReader(`{"currency":"CNY","surprise":1}`)); err == nil || !strings.Contains(err.Error(), "surprise") {
		t.Errorf("unknown field: %v", err)
	}
}

// A catalogue is versioned data: a service can appear, leave beta, change price and retire.
func TestVersionedCatalogue(t *testing.T) {
	file := `{"currency":"CNY","charging_starts":"2020-01-01T00:00:00+08:00","free_calls_per_month":500,"services":[
		{"id":"ocr","available_from":"2026-03-10T00:00:00+08:00","retired_at":"2026-12-01T00:00:00+08:00","prices":[
			{"beta":true},
			{"effective_from":"2026-06-01T00:00:00+08:00","tiers":[{"from_calls":0,"unit_price":"4"}]},
			{"effective_from":"2026-09-15T00:00:00+08:00","tiers":[{"from_calls":0,"unit_price":"3.5"},{"from_calls":1000,"unit_price":"3"}]}]}]}`
	c, err := LoadCatalogue(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time { return mustTime(s) }
	if err := c.CheckService("ocr", at("2026-03-09T23:59:59+08:00")); err == nil || !strings.Contains(err.Error(), "not available before") {
		t.Errorf("before availability: %v", err)
	}
	if err := c.CheckService("ocr", at("2026-11-30T23:59:59+08:00")); err != nil {
		t.Errorf("before retirement: %v", err)
	}
	if err := c.CheckService("ocr", at("2026-12-01T00:00:00+08:00")); err == nil || !strings.Contains(err.Error(), "retired") {
		t.Errorf("at retirement: %v", err)
	}
	cfg := defaultConfig()
	cfg.Catalogue = c
	var b logBuilder
	b.usage("u1", "a", "ocr", 2_000, "2026-05-10T00:00:00+08:00") // beta
	b.usage("u2", "a", "ocr", 2_000, "2026-06-10T00:00:00+08:00") // 4 per 1,000
	b.usage("u3", "a", "ocr", 2_000, "2026-09-20T00:00:00+08:00") // the September price was set mid-month: still 4
	b.usage("u4", "a", "ocr", 2_000, "2026-10-20T00:00:00+08:00") // 3 (reach 1,000)
	b.usage("u5", "a", "ocr", 2_000, "2026-12-02T00:00:00+08:00") // retired: rejected
	_, evs, rej := replayLogWith(t, cfg, b.String(), until("2027-01-01T00:00:00+08:00"))
	bs := bills(t, evs)
	for id, want := range map[string]string{"bill:a:2026-05": "0.00", "bill:a:2026-06": "8.00", "bill:a:2026-09": "8.00", "bill:a:2026-10": "6.00"} {
		if got := bs[id].Lines[0].Amount; got != want {
			t.Errorf("%s: %s; want %s", id, got, want)
		}
	}
	if !strings.Contains(rej, "retired") {
		t.Errorf("retired service not rejected: %q", rej)
	}
}
