package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/tally-billing/tally/contract"
	"github.com/tally-billing/tally/settle"
)

func init() {
	register("price", command{
		summary: "quote what a month's calls of a service cost (tier, free pack, amount)",
		run:     runPrice,
	})
}

func runPrice(_ context.Context, env *environment, args []string) error {
	fs := newFlags("price")
	service := fs.String("service", "", "service id (tally price --list shows them)")
	calls := fs.Int64("calls", 0, "the month's total calls of the service")
	prepaid := fs.Int64("prepaid", 0, "how many of them prepaid packs cover")
	activated := fs.Bool("activated", true, "the service is activated (10,000 free calls a month)")
	period := fs.String("period", "", "billing month YYYY-MM (default: the current month in the billing time zone)")
	asJSON := fs.Bool("json", false, "print the bill line as JSON")
	list := fs.Bool("list", false, "list the catalogue's services and tiers for the month")
	billing := billingFlags(fs)
	if err := env.parse(fs, args); err != nil {
		return err
	}
	cfg, err := billing()
	if err != nil {
		return err
	}
	p := contract.PeriodOf(time.Now(), cfg.Location)
	if *period != "" {
		if p, err = contract.ParsePeriod(*period); err != nil {
			return err
		}
	}
	if *list {
		return printCatalogue(env, cfg, p)
	}
	if *service == "" {
		return errors.New("--service is required (tally price --list shows the services)")
	}
	q, err := settle.QuoteMonth(cfg, settle.QuoteRequest{Service: *service, Period: p, Calls: *calls, PrepaidCalls: *prepaid, Activated: *activated})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		return enc.Encode(q.Line)
	}
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	l := q.Line
	fmt.Fprintf(w, "service\t%s (%s)\n", l.Service, p)
	fmt.Fprintf(w, "calls\t%d\n", l.Calls)
	fmt.Fprintf(w, "free\t%d\n", l.FreeCalls)
	fmt.Fprintf(w, "prepaid\t%d\n", l.PrepaidCalls)
	fmt.Fprintf(w, "billable\t%d\n", l.BillableCalls)
	fmt.Fprintf(w, "tier\t%d (unit price %s %s per 1,000 calls)\n", l.Tier, l.UnitPrice, cfg.Catalogue.Currency)
	fmt.Fprintf(w, "amount\t%s %s\n", l.Amount, cfg.Catalogue.Currency)
	fmt.Fprintf(w, "next month's hold\t%s %s (list price × %s)\n", q.ListAmount, cfg.Catalogue.Currency, cfg.HoldRatio)
	return w.Flush()
}

func printCatalogue(env *environment, cfg settle.Config, p contract.Period) error {
	w := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "service\tname\tprices for %s (%s per 1,000 calls, by monthly reach)\n", p, cfg.Catalogue.Currency)
	for _, id := range cfg.Catalogue.ServiceIDs() {
		s := cfg.Catalogue.ListSchedule(id, p.Start(cfg.Location))
		desc := "free public beta"
		if !s.Free {
			desc = ""
			for i, t := range s.Tiers {
				if i > 0 {
					desc += "  "
				}
				desc += fmt.Sprintf("≥%d: %s", t.FromCalls, t.UnitPrice)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", id, cfg.Catalogue.Service(id).Name, desc)
	}
	return w.Flush()
}
