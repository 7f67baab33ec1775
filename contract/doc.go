// Package contract is what every stage of Tally and every client shares (SPEC §4): the usage event
// and its validation, the billing month (Period), the input and output event types, the data of
// the events Tally emits, and one encoder for the events Tally accepts. Every stage validates
// usage with this code, so a record is judged the same way at the edge, in the sink and in replay.
//
// It imports no HTTP, Kafka, ClickHouse or metrics code, so a gateway, a ledger or a test can
// depend on it without pulling any of them in.
package contract
