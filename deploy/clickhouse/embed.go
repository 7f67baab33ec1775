// Package clickhouse holds Tally's ClickHouse schema as versioned migrations, embedded into the
// binary and applied by `tally migrate` (internal/chx.Migrate). Files are NNNN_name.sql, applied
// in order, each statement idempotent (IF NOT EXISTS) so a migration cut short can run again.
// Applied files are append-only: their SHA-256 is recorded, and an edited one is refused; change
// the schema with a new file.
package clickhouse

import "embed"

// Migrations is the migrations/ directory.
//
//go:embed migrations/*.sql
var Migrations embed.FS
