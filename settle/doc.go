// Package settle is Tally's billing core: the price catalogue, monthly settlement, holds and
// account suspension, as pure logic over the event log (SPEC §1–§5). It imports neither Kafka nor
// ClickHouse and never reads a clock, so `tally replay` and the settle worker produce the same
// bytes from the same log.
//
// The pieces:
//   - Catalogue: versioned price data (DefaultCatalogue is SPEC §1; LoadCatalogue reads JSON).
//   - Engine: folds validated inputs (usage, activations, packs, contract prices, ledger replies)
//     and settles months, emitting bills, hold releases and requests, and account-status events.
//   - Replayer / Replay: drives an Engine from a log in log order with the replay clock of SPEC §5.
//   - QuoteMonth: prices one month's calls of one service, for `tally price` and live usage views.
//
// Decisions where the seed and SPEC leave room (keep them unless an issue says otherwise):
//   - Charging start and price versions apply per month: a month whose first instant is before
//     the catalogue's charging_starts is free (tier 0), and a month uses the price version in
//     effect at its first instant, the same rule SPEC §2 gives for contract prices.
//   - A free-beta line still splits calls into free and billable as any line does; only its price
//     is 0. Packs cannot be bought for a service while it is in beta (the seed: no prepaid packs).
//   - Adjustments: calls_before is the calls shown by the last line or adjustment for that
//     (period, service); a re-pricing that changes no amount emits nothing.
//   - A hold is released at the next settlement unless its state is failed at that moment: a hold
//     that failed and was later placed after a recharge is released like any other.
//   - Ledger replies count only for the account's current hold while it awaits an answer, so a
//     redelivered reply changes nothing.
//   - Emitted events carry the settlement instant (first instant of M+1 plus the grace period) or,
//     for ledger-driven events, the log clock, formatted in the billing time zone.
//   - Money inside the engine is integer cents (every amount is rounded to 0.01 per SPEC), with
//     overflow checks; prices are decimal.Decimal; the wire has decimal strings.
package settle
