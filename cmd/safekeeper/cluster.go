package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/pgsafekeeper/safekeeper/pkg/election"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
)

// clusterFlags are the flags of a safekeeper cluster coordinated in etcd.
type clusterFlags struct {
	endpoints    string
	prefix       string
	leaseTTL     time.Duration
	dialTimeout  time.Duration
	advertisePG  string
	maxLag       string
	cacert       string
	cert         string
	key          string
	username     string
	password     string
	peerConnInfo string
}

func registerClusterFlags(fs *flag.FlagSet, c *clusterFlags) {
	fs.StringVar(&c.endpoints, "etcd", "", "etcd endpoints (comma-separated, e.g. http://10.0.0.1:2379); enables the cluster: peers, an elected offloader, a shared backup_lsn. Without it this node is always its own offloader")
	fs.StringVar(&c.prefix, "etcd-prefix", "/safekeeper", "key prefix in etcd")
	fs.DurationVar(&c.leaseTTL, "offload-lease-ttl", 10*time.Second, "lease TTL of this node's etcd session: how long a silent offloader keeps the role")
	fs.DurationVar(&c.dialTimeout, "etcd-dial-timeout", 5*time.Second, "timeout of one connection attempt to etcd")
	fs.StringVar(&c.advertisePG, "advertise-pg", "", "host:port at which peers reach this node's replication listener (default: --listen-pg when it names a host)")
	fs.StringVar(&c.maxLag, "offload-max-lag", "128MB", "an offloader further behind than this, and making no progress, hands over to an eligible peer")
	fs.StringVar(&c.cacert, "etcd-cacert", "", "CA bundle (PEM) verifying etcd's certificates; enables TLS")
	fs.StringVar(&c.cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&c.key, "etcd-key", "", "private key (PEM) of --etcd-cert")
	fs.StringVar(&c.username, "etcd-user", "", "etcd user name (with --etcd-password)")
	fs.StringVar(&c.password, "etcd-password", "", "etcd password (prefer the environment: SAFEKEEPER_ETCD_PASSWORD)")
	fs.StringVar(&c.peerConnInfo, "peer-conninfo", "", "libpq key=value options (user, sslmode, password...) to connect to peers when recovering WAL from them; host and port come from each peer's --advertise-pg")
}

// validate checks the flags that need no network.
func (c *clusterFlags) validate(listenPG, name string) error {
	if c.endpoints == "" {
		return nil
	}
	if name == defaultName {
		return errors.New("--name is required with --etcd: each safekeeper of a cluster needs its own (it names its etcd key and its upstream slot)")
	}
	if c.peerConnInfo != "" {
		if _, err := pgconn.ParseConfig(c.peerConnInfo + " host=peer.invalid"); err != nil {
			return fmt.Errorf("--peer-conninfo: %w", err)
		}
	}
	for _, ep := range c.list() {
		if err := checkEndpoint(ep); err != nil {
			return fmt.Errorf("--etcd: %w", err)
		}
	}
	if c.leaseTTL < time.Second {
		return fmt.Errorf("--offload-lease-ttl must be at least 1s, not %s", c.leaseTTL)
	}
	if (c.cert == "") != (c.key == "") {
		return errors.New("--etcd-cert and --etcd-key must be given together")
	}
	if (c.username == "") != (c.password == "") {
		return errors.New("--etcd-user and --etcd-password must be given together")
	}
	if c.advertisePG == "" {
		host, _, err := net.SplitHostPort(listenPG)
		if err != nil || host == "" || net.ParseIP(host).IsUnspecified() {
			return fmt.Errorf("--advertise-pg is required with --etcd when --listen-pg (%q) names no host peers can reach", listenPG)
		}
		c.advertisePG = listenPG
	}
	if _, _, err := net.SplitHostPort(c.advertisePG); err != nil {
		return fmt.Errorf("--advertise-pg: %w", err)
	}
	if _, err := parseSize(c.maxLag); err != nil {
		return fmt.Errorf("--offload-max-lag: %w", err)
	}
	return nil
}

// checkEndpoint accepts what clientv3 dials: http(s)://host:port,
// unix(s)://path, or host:port.
func checkEndpoint(ep string) error {
	if ep == "" {
		return errors.New("empty endpoint")
	}
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		switch scheme {
		case "http", "https":
			u, err := url.Parse(ep)
			if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
				return fmt.Errorf("invalid endpoint %q: want %s://host:port", ep, scheme)
			}
			return nil
		case "unix", "unixs":
			if rest == "" {
				return fmt.Errorf("invalid endpoint %q: no socket path", ep)
			}
			return nil
		default:
			return fmt.Errorf("invalid endpoint %q: scheme must be http, https, unix or unixs", ep)
		}
	}
	if host, port, err := net.SplitHostPort(ep); err != nil || host == "" || port == "" {
		return fmt.Errorf("invalid endpoint %q: want host:port or http(s)://host:port", ep)
	}
	return nil
}

func (c *clusterFlags) list() []string {
	var out []string
	for _, ep := range strings.Split(c.endpoints, ",") {
		out = append(out, strings.TrimSpace(ep))
	}
	return out
}

// client connects to etcd. clientv3 dials lazily and retries by itself, so
// an etcd that is down at start-up delays nothing but the cluster work.
func (c *clusterFlags) client(log *zap.Logger) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   c.list(),
		DialTimeout: c.dialTimeout,
		Username:    c.username,
		Password:    c.password,
		Logger:      log.Named("etcd-client").WithOptions(zap.IncreaseLevel(zap.WarnLevel)),
		// Detect a dead connection within a few seconds, so that a lost
		// session is noticed about when its lease expires.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		// gRPC's default reconnect backoff grows to two minutes: after an
		// etcd outage the node would wait that long to notice its return.
		// Offloading should resume within a lease TTL or so.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: c.dialTimeout,
		})},
	}
	if c.cacert != "" || c.cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.cacert != "" {
			pem, err := os.ReadFile(c.cacert)
			if err != nil {
				return nil, fmt.Errorf("--etcd-cacert: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--etcd-cacert: no certificate in %s", c.cacert)
			}
			tc.RootCAs = pool
		}
		if c.cert != "" {
			kp, err := tls.LoadX509KeyPair(c.cert, c.key)
			if err != nil {
				return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{kp}
		}
		cfg.TLS = tc
	}
	return clientv3.New(cfg)
}

// clusterConfig builds the timeline's cluster configuration.
func (c *clusterFlags) clusterConfig(cli *clientv3.Client, name string) supervisor.ClusterConfig {
	maxLag, _ := parseSize(c.maxLag) // validated
	return supervisor.ClusterConfig{
		Election: election.Config{
			Client: cli, Prefix: strings.TrimRight(c.prefix, "/"), TTL: c.leaseTTL, Name: name, MaxLag: maxLag,
		},
		Addr:           c.advertisePG,
		PeerConnString: c.peerConnInfo,
	}
}

// closeWithin closes the etcd client without hanging on an unreachable
// server.
func closeWithin(cli *clientv3.Client, d time.Duration) {
	done := make(chan struct{})
	go func() { cli.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
