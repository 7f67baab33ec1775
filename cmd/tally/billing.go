package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tally-billing/tally/settle"
)

// billingFlags registers the settings of the billing core shared by every command that prices
// (replay, price, settle) and returns a function building its config after parsing.
func billingFlags(fs *flag.FlagSet) func() (settle.Config, error) {
	catalogue := fs.String("catalogue", "", "price catalogue JSON file (default: the built-in catalogue of SPEC §1)")
	tz := fs.String("billing-tz", "Asia/Shanghai", "billing time zone: decides which month an instant belongs to")
	ratio := fs.String("hold-ratio", "1", "hold for next month as a multiple of this month's list-price usage")
	return func() (settle.Config, error) {
		loc, err := time.LoadLocation(*tz)
		if err != nil {
			return settle.Config{}, fmt.Errorf("--billing-tz %q: %w", *tz, err)
		}
		r, err := decimal.NewFromString(*ratio)
		if err != nil {
			return settle.Config{}, fmt.Errorf("--hold-ratio %q is not a decimal", *ratio)
		}
		cat := settle.DefaultCatalogue()
		if *catalogue != "" {
			f, err := os.Open(*catalogue)
			if err != nil {
				return settle.Config{}, fmt.Errorf("--catalogue: %w", err)
			}
			defer f.Close()
			if cat, err = settle.LoadCatalogue(f); err != nil {
				return settle.Config{}, fmt.Errorf("--catalogue %s: %w", *catalogue, err)
			}
		}
		cfg := settle.Config{Catalogue: cat, Location: loc, HoldRatio: r}
		return cfg, cfg.Validate()
	}
}
