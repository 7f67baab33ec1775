// Package tlsfiles loads TLS certificates from PEM files for Tally's HTTP servers and its
// clients, and re-reads a server's files on demand (the roles do on SIGHUP), so a certificate
// is rotated without a restart.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Server names a server's files: its certificate chain and key, and optionally the CAs whose
// client certificates it requires (mutual TLS: a client without such a certificate is refused
// in the handshake).
type Server struct {
	CertFile, KeyFile string
	ClientCAFile      string
}

// Enabled reports whether TLS is asked for.
func (s Server) Enabled() bool { return s.CertFile != "" || s.KeyFile != "" || s.ClientCAFile != "" }

// Validate reports every missing file at once.
func (s Server) Validate() error {
	var errs []error
	if s.CertFile == "" {
		errs = append(errs, errors.New("TLS: the certificate file is missing (give it with the key file)"))
	}
	if s.KeyFile == "" {
		errs = append(errs, errors.New("TLS: the key file is missing (give it with the certificate file)"))
	}
	return errors.Join(errs...)
}

// ServerCerts is a server's loaded certificate and client CAs; Reload swaps in new ones for
// the handshakes that come next.
type ServerCerts struct {
	files Server
	cert  atomic.Pointer[tls.Certificate]
	cas   atomic.Pointer[x509.CertPool] // nil: no client certificates asked for
}

// Load reads the server's files.
func (s Server) Load() (*ServerCerts, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c := &ServerCerts{files: s}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload re-reads the files; when one does not load, the certificates held stay and the error
// says which file.
func (c *ServerCerts) Reload() error {
	cert, err := tls.LoadX509KeyPair(c.files.CertFile, c.files.KeyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s / key %s: %w", c.files.CertFile, c.files.KeyFile, err)
	}
	var cas *x509.CertPool
	if c.files.ClientCAFile != "" {
		if cas, err = loadPool(c.files.ClientCAFile); err != nil {
			return err
		}
	}
	c.cert.Store(&cert)
	c.cas.Store(cas)
	return nil
}

// Config is the server's TLS configuration: TLS 1.2 at least, the certificate held at each
// handshake, and, with client CAs, a verified client certificate required.
func (c *ServerCerts) Config() *tls.Config {
	current := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.cert.Load(), nil }
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, GetCertificate: current}
	// Per handshake, so a reload's client CAs apply to the next connection.
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: base.NextProtos, GetCertificate: current}
		if cas := c.cas.Load(); cas != nil {
			cfg.ClientCAs, cfg.ClientAuth = cas, tls.RequireAndVerifyClientCert
		}
		return cfg, nil
	}
	return base
}

// Client names a client's files: the CAs it trusts (empty: the system's) and optionally its own
// certificate and key, for servers that require one.
type Client struct {
	CAFile            string
	CertFile, KeyFile string
}

// Config is the client's TLS configuration.
func (c Client) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pool, err := loadPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("TLS: a client certificate needs its key, and a key its certificate")
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("TLS client certificate %s / key %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", file)
	}
	return pool, nil
}
