package chx_test

import (
	"context"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	chschema "github.com/tally-billing/tally/deploy/clickhouse"
	"github.com/tally-billing/tally/internal/chx"
	"github.com/tally-billing/tally/internal/testinfra"
)

func TestSplitStatements(t *testing.T) {
	got := chx.SplitStatements("-- c\nCREATE TABLE a (x UInt8) -- trailing\nENGINE = Memory;\n\nSELECT 1;\nSELECT 2")
	want := []string{"CREATE TABLE a (x UInt8) -- trailing\nENGINE = Memory", "SELECT 1", "SELECT 2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q", got)
	}
}

// The embedded schema applies to a fresh database, and applying it again changes nothing.
func TestMigrateIsIdempotent(t *testing.T) {
	_, cfg := testinfra.ClickHouse(t, clickhouse.Native)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	applied, err := chx.Migrate(ctx, cfg, chschema.Migrations, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) == 0 || applied[0] != "0001_usage_events.sql" {
		t.Fatalf("applied %v", applied)
	}
	again, err := chx.Migrate(ctx, cfg, chschema.Migrations, log)
	if err != nil || len(again) != 0 {
		t.Fatalf("second run applied %v, err %v", again, err)
	}
	// A later migration is applied on its own.
	extra := fstest.MapFS{"m/0001_usage_events.sql": {Data: []byte("SELECT 1;")}, "m/9999_more.sql": {Data: []byte("CREATE TABLE IF NOT EXISTS more (x UInt8) ENGINE = Memory;")}}
	more, err := chx.Migrate(ctx, cfg, extra, log)
	if err != nil || !reflect.DeepEqual(more, []string{"9999_more.sql"}) {
		t.Fatalf("applied %v, err %v", more, err)
	}
	if _, err := chx.Migrate(ctx, chx.Config{Addr: cfg.Addr, Username: "default", Database: "bad-name;"}, extra, log); err == nil {
		t.Fatal("a database name that is not an identifier was accepted")
	}
}
