package settle

import (
	"fmt"
	"testing"

	"github.com/tally-billing/tally/contract"
)

// Hand-computed line amounts at every tier boundary of every service, for an activated service
// (10,000 free calls): amount = (calls - 10,000) × unit price / 1000, rounded half-up to 0.01.
func TestTierBoundariesEveryService(t *testing.T) {
	type want struct {
		tier   int
		unit   string
		amount string
	}
	// per service: the expected line at 999,999 / 1,000,000 / 2,999,999 / 3,000,000 / 14,999,999 / 15,000,000 calls
	calls := []int64{999_999, 1_000_000, 2_999_999, 3_000_000, 14_999_999, 15_000_000}
	cases := map[string][6]want{
		// 989,999×2.5=2474.9975 | 990,000×2.2=2178 | 2,989,999×2.2=6577.9978 | 2,990,000×2.0=5980 | 14,989,999×2.0=29979.998 | 14,990,000×1.5=22485
		"image-tagging":       {{1, "2.5", "2475.00"}, {2, "2.2", "2178.00"}, {2, "2.2", "6578.00"}, {3, "2", "5980.00"}, {3, "2", "29980.00"}, {4, "1.5", "22485.00"}},
		"product-recognition": {{1, "2.5", "2475.00"}, {2, "2.2", "2178.00"}, {2, "2.2", "6578.00"}, {3, "2", "5980.00"}, {3, "2", "29980.00"}, {4, "1.5", "22485.00"}},
		// ×3.5=3464.9965 | ×3.2=3168 | ×3.2=9567.9968 | ×2.8=8372 | ×2.8=41971.9972 | ×2.2=32978
		"product-recognition-wechat": {{1, "3.5", "3465.00"}, {2, "3.2", "3168.00"}, {2, "3.2", "9568.00"}, {3, "2.8", "8372.00"}, {3, "2.8", "41972.00"}, {4, "2.2", "32978.00"}},
		// ×2.0=1979.998 | ×1.5=1485 | ×1.5=4484.9985 | ×1.2=3588 | ×1.2=17987.9988 | ×1.0=14990
		"celebrity-recognition": {{1, "2", "1980.00"}, {2, "1.5", "1485.00"}, {2, "1.5", "4485.00"}, {3, "1.2", "3588.00"}, {3, "1.2", "17988.00"}, {4, "1", "14990.00"}},
		"smart-cropping":        {{1, "2", "1980.00"}, {2, "1.5", "1485.00"}, {2, "1.5", "4485.00"}, {3, "1.2", "3588.00"}, {3, "1.2", "17988.00"}, {4, "1", "14990.00"}},
		// ×3.0=2969.997 | ×2.5=2475 | ×2.5=7474.9975 | ×2.0=5980 | ×2.0=29979.998 | ×1.5=22485
		"vehicle-recognition": {{1, "3", "2970.00"}, {2, "2.5", "2475.00"}, {2, "2.5", "7475.00"}, {3, "2", "5980.00"}, {3, "2", "29980.00"}, {4, "1.5", "22485.00"}},
		"image-quality":       {{1, "3", "2970.00"}, {2, "2.5", "2475.00"}, {2, "2.5", "7475.00"}, {3, "2", "5980.00"}, {3, "2", "29980.00"}, {4, "1.5", "22485.00"}},
		// free public beta: metered, never charged
		"image-enhancement": {{0, "0", "0.00"}, {0, "0", "0.00"}, {0, "0", "0.00"}, {0, "0", "0.00"}, {0, "0", "0.00"}, {0, "0", "0.00"}},
	}
	if len(cases) != len(DefaultCatalogue().ServiceIDs()) {
		t.Fatalf("table covers %d services, catalogue has %d", len(cases), len(DefaultCatalogue().ServiceIDs()))
	}
	for svc, wants := range cases {
		for i, n := range calls {
			t.Run(fmt.Sprintf("%s/%d", svc, n), func(t *testing.T) {
				line := settleSingle(t, svc, n, true)
				w := wants[i]
				if line.Tier != w.tier || line.UnitPrice != w.unit || line.Amount != w.amount {
					t.Fatalf("line = tier %d unit %s amount %s; want tier %d unit %s amount %s", line.Tier, line.UnitPrice, line.Amount, w.tier, w.unit, w.amount)
				}
				if line.FreeCalls != 10_000 || line.BillableCalls != n-10_000 || line.Calls != n {
					t.Fatalf("line calls %d free %d billable %d", line.Calls, line.FreeCalls, line.BillableCalls)
				}
			})
		}
	}
}

// Reach pricing is not monotone: one call fewer than a tier boundary can cost more. That is the
// price guide's rule, not a bug.
func TestReachPricingIsNotMonotone(t *testing.T) {
	below := settleSingle(t, "image-tagging", 999_999, true)
	at := settleSingle(t, "image-tagging", 1_000_000, true)
	if below.Amount != "2475.00" || at.Amount != "2178.00" {
		t.Fatalf("999,999 calls cost %s and 1,000,000 cost %s; want 2475.00 and 2178.00", below.Amount, at.Amount)
	}
}

func TestFreePackAndRounding(t *testing.T) {
	cases := []struct {
		name      string
		service   string
		calls     int64
		activated bool
		free      int64
		billable  int64
		amount    string
	}{
		{"below the free pack", "image-tagging", 9_999, true, 9_999, 0, "0.00"},
		{"exactly the free pack", "image-tagging", 10_000, true, 10_000, 0, "0.00"},
		{"one above: 0.0025 rounds down", "image-tagging", 10_001, true, 10_000, 1, "0.00"},
		{"0.005 rounds half-up", "image-tagging", 10_002, true, 10_000, 2, "0.01"},
		{"0.015 rounds half-up", "image-tagging", 10_006, true, 10_000, 6, "0.02"},
		{"2178.055 rounds half-up at tier 2", "image-tagging", 1_000_025, true, 10_000, 990_025, "2178.06"},
		{"0.0175 rounds up at 3.5", "product-recognition-wechat", 10_005, true, 10_000, 5, "0.02"},
		{"0.0035 rounds down at 3.5", "product-recognition-wechat", 10_001, true, 10_000, 1, "0.00"},
		{"0.007 rounds up at 3.5", "product-recognition-wechat", 10_002, true, 10_000, 2, "0.01"},
		{"not activated: no free pack", "image-tagging", 9_999, false, 0, 9_999, "25.00"},
		{"not activated, 0.0025", "image-tagging", 1, false, 0, 1, "0.00"},
		{"not activated, 0.005", "image-tagging", 2, false, 0, 2, "0.01"},
		{"beta service never charged", "image-enhancement", 20_000_000, true, 10_000, 19_990_000, "0.00"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			line := settleSingle(t, c.service, c.calls, c.activated)
			if line.Activated != c.activated || line.FreeCalls != c.free || line.BillableCalls != c.billable || line.Amount != c.amount {
				t.Fatalf("got activated=%v free=%d billable=%d amount=%s; want %v %d %d %s",
					line.Activated, line.FreeCalls, line.BillableCalls, line.Amount, c.activated, c.free, c.billable, c.amount)
			}
		})
	}
}

// settleSingle bills one account for calls of service in October 2026 (activated on 2026-09-01
// when activated is true) and returns the bill's only line.
func settleSingle(t *testing.T, service string, calls int64, activated bool) contract.BillLine {
	t.Helper()
	var b logBuilder
	if activated {
		b.activate("acct", service, "2026-09-01T00:00:00+08:00")
	}
	for left, i := calls, 0; left > 0; i++ {
		n := min(left, 1_000_000)
		b.usage(fmt.Sprintf("u%d", i), "acct", service, n, "2026-10-10T12:00:00+08:00")
		left -= n
	}
	_, evs, rej := replayLog(t, b.String(), until("2026-11-01T00:00:00+08:00"))
	if rej != "" {
		t.Fatalf("rejections: %s", rej)
	}
	bill, ok := bills(t, evs)["bill:acct:2026-10"]
	if !ok || len(bill.Lines) != 1 {
		t.Fatalf("no single-line bill in %v", types(evs))
	}
	return bill.Lines[0]
}

func TestScheduleSelectsTierByReach(t *testing.T) {
	s := DefaultCatalogue().ListSchedule("image-tagging", contract.PeriodOf(mustTime("2026-10-01T00:00:00+08:00"), defaultConfig().Location).Start(defaultConfig().Location))
	for _, c := range []struct {
		total int64
		tier  int
		unit  string
	}{{0, 1, "2.5"}, {1, 1, "2.5"}, {999_999, 1, "2.5"}, {1_000_000, 2, "2.2"}, {15_000_000, 4, "1.5"}, {1 << 60, 4, "1.5"}} {
		tier, unit := s.Price(c.total)
		if tier != c.tier || unit.String() != c.unit {
			t.Errorf("Price(%d) = %d %s; want %d %s", c.total, tier, unit, c.tier, c.unit)
		}
	}
}
