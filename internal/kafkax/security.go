package kafkax

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Cluster is a Kafka cluster: its bootstrap brokers and how every connection to them is made.
type Cluster struct {
	Brokers  []string
	Security Security
}

// Plaintext is a cluster reached without TLS or SASL (the local and test brokers).
func Plaintext(brokers []string) Cluster { return Cluster{Brokers: brokers} }

// Security is how connections to Kafka authenticate and are encrypted: SASL (PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512) and TLS; the zero value is plaintext without SASL.
type Security struct {
	SASL sasl.Mechanism
	TLS  *tls.Config
}

// SASL builds the mechanism named (plain, scram-sha-256, scram-sha-512; "" is none).
func SASL(mechanism, user, password string) (sasl.Mechanism, error) {
	switch strings.ToLower(mechanism) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: user, Password: password}, nil
	case "scram-sha-256", "scram-sha-512":
		algo := scram.SHA256
		if strings.HasSuffix(strings.ToLower(mechanism), "512") {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, password)
		if err != nil {
			return nil, fmt.Errorf("kafka SASL %s: %w", mechanism, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka SASL mechanism %q: want plain, scram-sha-256 or scram-sha-512", mechanism)
}

func (s Security) plaintext() bool { return s.SASL == nil && s.TLS == nil }

// Dialer is a dialer for kafka-go readers, consumer groups and connections, with the security
// applied (kafka-go's default dialer's timeout).
func (s Security) Dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, SASLMechanism: s.SASL, TLS: s.TLS}
}

// Transport applies the security to tr and returns it, for writers and clients that want their
// own transport.
func (s Security) Transport(tr *kafka.Transport) *kafka.Transport {
	tr.SASL, tr.TLS = s.SASL, s.TLS
	return tr
}

// RoundTripper is what a writer or client should use: nil (kafka-go's shared default transport)
// for plaintext, a transport of its own otherwise.
func (s Security) RoundTripper() kafka.RoundTripper {
	if s.plaintext() {
		return nil
	}
	return s.Transport(&kafka.Transport{})
}

// Client is a kafka-go client of the cluster.
func (c Cluster) Client(timeout time.Duration) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: timeout, Transport: c.Security.RoundTripper()}
}
