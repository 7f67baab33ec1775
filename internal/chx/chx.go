// Package chx is the thin shared plumbing over clickhouse-go v2: connection options for the
// native and HTTP protocols and a readiness check.
package chx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Config names a ClickHouse server and database.
type Config struct {
	Addr     string // host:port of the native or HTTP interface, depending on Protocol
	Protocol clickhouse.Protocol
	Database string
	Username string
	Password string
	// TLS encrypts the connection (native protocol over TLS, or HTTPS); nil: plaintext.
	TLS *tls.Config
}

// Validate reports every missing setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("clickhouse: address is empty"))
	}
	if c.Username == "" {
		errs = append(errs, errors.New("clickhouse: username is empty"))
	}
	if c.TLS != nil && c.Protocol == clickhouse.HTTP && c.Password == "" {
		// clickhouse-go (conn_http.go) sends X-ClickHouse-SSL-Certificate-Auth: on for a user
		// without a password over HTTPS, and the server then wants a client certificate.
		errs = append(errs, errors.New("clickhouse: over HTTPS the user needs a password (clickhouse-go asks for certificate authentication without one); give one, or use the native protocol over TLS"))
	}
	return errors.Join(errs...)
}

// Open connects with clickhouse-go's native API (either protocol) and pings the server.
func Open(ctx context.Context, cfg Config) (driver.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{cfg.Addr},
		Protocol: cfg.Protocol,
		Auth:     clickhouse.Auth{Database: cfg.Database, Username: cfg.Username, Password: cfg.Password},
		Settings: clickhouse.Settings{
			// Inserts return only when the data is on disk; crash-safety depends on it.
			"insert_deduplicate": 1,
		},
		TLS:         cfg.TLS,
		DialTimeout: 5 * time.Second,
		ReadTimeout: 5 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %s (%s): %w", cfg.Addr, cfg.Protocol, err)
	}
	if err := conn.Ping(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ping clickhouse %s (%s): %w", cfg.Addr, cfg.Protocol, err)
	}
	return conn, nil
}

// PingHTTP checks the HTTP interface's /ping endpoint, which answers "Ok." when the server is up;
// an https:// URL is checked with tlsConfig (nil: the system's CAs).
func PingHTTP(ctx context.Context, baseURL string, tlsConfig *tls.Config) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(baseURL, "/")+"/ping", nil)
	if err != nil {
		return fmt.Errorf("clickhouse http ping: %w", err)
	}
	client := http.DefaultClient
	if tlsConfig != nil {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("clickhouse http ping %s: %w", baseURL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "Ok.") {
		return fmt.Errorf("clickhouse http ping %s: status %d body %q", baseURL, resp.StatusCode, body)
	}
	return nil
}

// SelectOne runs SELECT 1 and checks the answer, proving the server executes queries.
func SelectOne(ctx context.Context, conn driver.Conn) error {
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("clickhouse SELECT 1: %w", err)
	}
	if one != 1 {
		return fmt.Errorf("clickhouse SELECT 1 returned %d", one)
	}
	return nil
}
