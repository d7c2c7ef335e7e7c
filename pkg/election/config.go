package election

import (
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults of Config.
const (
	DefaultPrefix = "/safekeeper"
	DefaultTTL    = 10 * time.Second
	DefaultMaxLag = 128 << 20
)

// Timings that are not configuration.
const (
	// publishInterval is the least time between two puts of a node's
	// NodeInfo: the flush position changes with every commit upstream.
	publishInterval = time.Second
	// stallCheckInterval is how often a leader whose archive lag exceeds
	// MaxLag checks whether it is stalled; within MaxLag it waits for
	// Local.Changed instead.
	stallCheckInterval = time.Second
	// resignTimeout and revokeTimeout bound the clean-up requests of a
	// term and of a session. Together they keep Run's return after
	// cancellation under 2s when etcd does not answer; the lease then
	// expires on its own within the TTL.
	resignTimeout = 600 * time.Millisecond
	revokeTimeout = 800 * time.Millisecond
	// retryMin and retryMax bound the backoff between failed etcd
	// operations.
	retryMin = 200 * time.Millisecond
	retryMax = 5 * time.Second
	// termRetryDelay is the pause before campaigning again after the
	// leader's work returned by itself, so that a LeadFunc failing at once
	// does not spin through elections.
	termRetryDelay = time.Second
	// advanceAttempts bounds Term.Advance's retries of a lost race on the
	// backup_lsn key.
	advanceAttempts = 5
)

// Config is shared by all timelines' members of one process.
type Config struct {
	// Client is the etcd client; the caller owns it and closes it after
	// every Member's Run has returned.
	Client *clientv3.Client
	// Prefix of every key, without a trailing slash (default
	// DefaultPrefix).
	Prefix string
	// TTL of the session lease (default DefaultTTL). etcd counts leases in
	// whole seconds: it is rounded up, to at least 1s. A node that cannot
	// reach etcd for this long loses its leadership, and its node key
	// disappears. etcd may raise small TTLs to its own minimum (1.5
	// election timeouts, 1.5s with etcd's default timings).
	TTL time.Duration
	// Name is this node's name, unique among the nodes of a timeline. It
	// may not contain '/'.
	Name string
	// MaxLag is the archive lag in bytes (--offload-max-lag) beyond which
	// a leader whose backup position does not advance hands over (default
	// DefaultMaxLag).
	MaxLag uint64
	// StallTimeout: a leader whose archive lag exceeds MaxLag and whose
	// backup position has not advanced for this long hands over, and then
	// does not campaign for this long (default 3*TTL).
	StallTimeout time.Duration
	// Metrics may be nil.
	Metrics *Metrics
}

// withDefaults returns c with defaults filled in and TTL rounded up to
// whole seconds.
func (c Config) withDefaults() Config {
	c.Prefix = strings.TrimRight(c.Prefix, "/")
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.TTL <= 0 {
		c.TTL = DefaultTTL
	}
	c.TTL = time.Duration(ttlSeconds(c.TTL)) * time.Second
	if c.MaxLag == 0 {
		c.MaxLag = DefaultMaxLag
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 3 * c.TTL
	}
	return c
}

// ttlSeconds rounds d up to whole seconds, at least 1.
func ttlSeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// opTimeout bounds one etcd request of the member: long enough for a
// loaded cluster, short enough that a hung request is noticed (and shown in
// Status) well before the lease is at stake.
func (c Config) opTimeout() time.Duration {
	return min(max(c.TTL, 2*time.Second), 10*time.Second)
}

func validName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("election: %s is empty", what)
	case strings.Contains(s, "/"):
		return fmt.Errorf("election: %s %q contains '/'", what, s)
	}
	return nil
}

func (c Config) validate() error {
	if c.Client == nil {
		return errors.New("election: Config.Client is nil")
	}
	return validName("Config.Name", c.Name)
}

// keys are a timeline's etcd keys.
type keys struct {
	timeline string // <prefix>/timelines/<tenant>/<timeline>, the watched range is timeline+"/"
	nodes    string // timeline+"/nodes/"; a node's key is nodes+name
	election string // timeline+"/offloader"; candidates are election+"/<lease id in hex>"
	backup   string // timeline+"/backup_lsn"
}

func newKeys(prefix, tenantID, timelineID string) keys {
	tl := prefix + "/timelines/" + tenantID + "/" + timelineID
	return keys{
		timeline: tl,
		nodes:    tl + "/nodes/",
		election: tl + "/offloader",
		backup:   tl + "/backup_lsn",
	}
}

// candidate returns the election key of the session with lease id: the
// same layout as concurrency.Election, so etcdctl and concurrency's
// Leader/Observe read it as usual.
func (k keys) candidate(lease clientv3.LeaseID) string {
	return fmt.Sprintf("%s/%x", k.election, int64(lease))
}
