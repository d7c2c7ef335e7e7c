package main

// Checks of the deployment files: docker-compose.yml, the Dockerfile and
// deploy/ (README, "Deployment with Docker Compose"). No Docker engine
// exists where the tests run, so the compose file is loaded with the
// compose specification's own Go loader (compose-go), every safekeeper
// command line in it goes through the binary's real flag parser, and the
// Grafana dashboard may only use metrics the code defines. Nothing here
// needs Docker or the network.

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v2"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// deployRoot is the repository root, seen from this package's directory.
const deployRoot = "../.."

// deployServices are the services issue 8 names.
var deployServices = []string{"primary", "sk1", "sk2", "sk3", "etcd", "s3", "standby", "prometheus", "grafana"}

// repoPath returns the absolute path of a file of the repository.
func repoPath(t *testing.T, rel string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(deployRoot, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// warningHook collects what compose-go logs at warning level and above
// (an obsolete `version:`, an unset variable, ...).
type warningHook struct {
	mu   sync.Mutex
	msgs []string
}

func (h *warningHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h *warningHook) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, e.Message)
	return nil
}

// loadCompose loads docker-compose.yml as `docker compose` would, with
// schema validation, interpolation, normalization and the consistency
// checks on; an error or a warning from the loader fails the test.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	std := logrus.StandardLogger()
	hook := &warningHook{}
	oldHooks := std.ReplaceHooks(logrus.LevelHooks{})
	oldOut := std.Out
	std.AddHook(hook)
	std.SetOutput(io.Discard)
	defer func() {
		std.ReplaceHooks(oldHooks)
		std.SetOutput(oldOut)
	}()

	opts, err := cli.NewProjectOptions([]string{repoPath(t, "docker-compose.yml")},
		cli.WithWorkingDirectory(repoPath(t, ".")),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, m := range hook.msgs {
		t.Errorf("docker-compose.yml: compose-go warns: %s", m)
	}
	return project
}

// safekeeperServices returns the services built from the repository's
// Dockerfile, by name.
func safekeeperServices(t *testing.T, p *types.Project) []types.ServiceConfig {
	t.Helper()
	root := repoPath(t, ".")
	var out []types.ServiceConfig
	for _, s := range p.Services {
		if s.Build != nil && filepath.Clean(s.Build.Context) == root {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// hermeticEnv removes the variables that parseFlags (SAFEKEEPER_*), the
// AWS configuration loader (AWS_*) and pgconn (PG*) read, and points the
// files they read at nothing, for the rest of the test.
func hermeticEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SAFEKEEPER_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "PG") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	none := filepath.Join(t.TempDir(), "none")
	t.Setenv("AWS_CONFIG_FILE", none)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("PGPASSFILE", none)
	t.Setenv("PGSERVICEFILE", none)
}

// secretPaths maps the paths at which svc's secrets appear in its
// container (/run/secrets/<name> unless given a target) to the files
// they come from.
func secretPaths(t *testing.T, p *types.Project, svc types.ServiceConfig) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, s := range svc.Secrets {
		def, ok := p.Secrets[s.Source]
		if !ok {
			t.Fatalf("%s: secret %q is not defined", svc.Name, s.Source)
		}
		if def.File == "" {
			t.Fatalf("%s: secret %q has no file", svc.Name, s.Source)
		}
		target := s.Target
		if target == "" {
			target = s.Source
		}
		if !strings.HasPrefix(target, "/") {
			target = "/run/secrets/" + target
		}
		m[target] = def.File
	}
	return m
}

// substituteSecrets replaces in-container secret paths in v by the files
// they are mounted from, and fails on a /run/secrets path that no secret of
// the service provides.
func substituteSecrets(t *testing.T, svc string, secrets map[string]string, v string) string {
	t.Helper()
	for target, file := range secrets {
		v = strings.ReplaceAll(v, target, file)
	}
	if strings.Contains(v, "/run/secrets/") {
		t.Errorf("%s: %q names a secret the service does not mount", svc, v)
	}
	return v
}

// parseService runs a safekeeper service's command through parseFlags as
// the container would: after the image's ENTRYPOINT (/safekeeper), with
// the service's SAFEKEEPER_* and AWS_* environment, the secrets at the
// paths of their files in the repository.
func parseService(t *testing.T, p *types.Project, svc types.ServiceConfig) config {
	t.Helper()
	if len(svc.Entrypoint) != 0 {
		t.Fatalf("%s: entrypoint %q overrides the image's /safekeeper", svc.Name, svc.Entrypoint)
	}
	if len(svc.Command) == 0 || svc.Command[0] != "run" {
		t.Fatalf("%s: command %q does not start with run", svc.Name, svc.Command)
	}
	secrets := secretPaths(t, p, svc)
	hermeticEnv(t)
	var envFlags []string
	for k, v := range svc.Environment {
		if v == nil || !(strings.HasPrefix(k, "SAFEKEEPER_") || strings.HasPrefix(k, "AWS_")) {
			continue
		}
		val := substituteSecrets(t, svc.Name, secrets, *v)
		t.Setenv(k, val)
		if name, ok := strings.CutPrefix(k, "SAFEKEEPER_"); ok {
			envFlags = append(envFlags, "--"+strings.ReplaceAll(strings.ToLower(name), "_", "-")+"="+val)
		}
	}
	var args []string
	for _, a := range svc.Command[1:] {
		args = append(args, substituteSecrets(t, svc.Name, secrets, a))
	}
	cfg, err := parseFlags(args)
	if err != nil {
		t.Fatalf("%s: safekeeper %s: %v", svc.Name, strings.Join(svc.Command, " "), err)
	}
	// parseFlags ignores a SAFEKEEPER_ variable no flag reads: given as
	// flags, each must parse too.
	sort.Strings(envFlags)
	if len(envFlags) > 0 {
		if _, err := parseFlags(append(slices.Clone(args), envFlags...)); err != nil {
			t.Errorf("%s: its SAFEKEEPER_* environment names no flag of run: %v", svc.Name, err)
		}
	}
	return cfg
}

func splitHostPort(t *testing.T, what, hostport string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%s %q: %v", what, hostport, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%s %q: %v", what, hostport, err)
	}
	return h, port
}

// postgresSettings returns the -c name=value settings of a postgres
// command line.
func postgresSettings(cmd []string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(cmd); i++ {
		var kv string
		switch {
		case cmd[i] == "-c" && i+1 < len(cmd):
			i++
			kv = cmd[i]
		case strings.HasPrefix(cmd[i], "-c"):
			kv = cmd[i][2:]
		case strings.HasPrefix(cmd[i], "--") && strings.Contains(cmd[i], "="):
			kv = cmd[i][2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[strings.ReplaceAll(strings.ToLower(k), "-", "_")] = v
		}
	}
	return out
}

var syncNames = regexp.MustCompile(`^\s*(?i:(ANY|FIRST)\s+)?(\d+)\s*\(([^)]*)\)\s*$`)

// TestDeployComposeLoads: docker-compose.yml loads and validates with
// compose-go, has every service issue 8 names, and every file it mounts or
// uses as a secret exists.
func TestDeployComposeLoads(t *testing.T) {
	p := loadCompose(t)
	for _, name := range deployServices {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("docker-compose.yml: no service %q", name)
		}
	}
	for name, s := range p.Secrets {
		st, err := os.Stat(s.File)
		if err != nil {
			t.Errorf("secret %s: %v", name, err)
		} else if st.Size() == 0 {
			t.Errorf("secret %s: %s is empty", name, s.File)
		}
	}
	for _, svc := range p.Services {
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: bind mount of %s: %v", svc.Name, v.Target, err)
			}
		}
	}
}

// TestDeploySafekeeperCommandsParse: each safekeeper service is built from
// the repository's Dockerfile and its command line parses with the
// binary's flag parser; its --name is the service's name and is what the
// primary's synchronous_standby_names lists; the addresses it uses name
// services of the file; its data directory is a named volume; it starts
// after the bucket exists.
func TestDeploySafekeeperCommandsParse(t *testing.T) {
	p := loadCompose(t)
	sks := safekeeperServices(t, p)
	var got []string
	for _, s := range sks {
		got = append(got, s.Name)
	}
	if !slices.Equal(got, []string{"sk1", "sk2", "sk3"}) {
		t.Fatalf("services built from the Dockerfile: %q, want sk1, sk2, sk3", got)
	}
	names := map[string]bool{}
	for _, svc := range sks {
		t.Run(svc.Name, func(t *testing.T) {
			if svc.Build.Dockerfile != "" && svc.Build.Dockerfile != "Dockerfile" {
				t.Errorf("built from %s, not the repository's Dockerfile", svc.Build.Dockerfile)
			}
			cfg := parseService(t, p, svc)
			names[cfg.name] = true
			if cfg.name != svc.Name {
				t.Errorf("--name %q, want the service's name %q", cfg.name, svc.Name)
			}
			onVolume := false
			for _, v := range svc.Volumes {
				onVolume = onVolume || (v.Type == types.VolumeTypeVolume && v.Target == cfg.dataDir)
			}
			if !onVolume {
				t.Errorf("--data-dir %s is not a named volume of the service", cfg.dataDir)
			}
			_, pgPort := splitHostPort(t, "--listen-pg", cfg.listenPG)
			if h, _ := splitHostPort(t, "--listen-pg", cfg.listenPG); h != "0.0.0.0" && h != "" {
				t.Errorf("--listen-pg %s: other containers cannot reach it", cfg.listenPG)
			}
			if h, _ := splitHostPort(t, "--listen-http", cfg.listenHTTP); h != "0.0.0.0" && h != "" {
				t.Errorf("--listen-http %s: Prometheus cannot reach it", cfg.listenHTTP)
			}
			if h, port := splitHostPort(t, "--advertise-pg", cfg.cluster.advertisePG); h != svc.Name || port != pgPort {
				t.Errorf("--advertise-pg %s, want %s:%d", cfg.cluster.advertisePG, svc.Name, pgPort)
			}
			up, err := pgconn.ParseConfig(cfg.upstream)
			if err != nil {
				t.Fatal(err)
			}
			if up.Host != "primary" || up.Port != 5432 {
				t.Errorf("--upstream names %s:%d, want the primary service", up.Host, up.Port)
			}
			if cfg.upstreamPasswordFile == "" {
				t.Error("no --upstream-password-file: the password would be in the command line")
			}
			if cfg.cluster.endpoints == "" {
				t.Error("no --etcd")
			}
			for _, ep := range strings.Split(cfg.cluster.endpoints, ",") {
				u, err := url.Parse(ep)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := p.Services[u.Hostname()]; !ok {
					t.Errorf("--etcd %s names no service", ep)
				}
			}
			if cfg.archiveCfg == nil {
				t.Fatal("no --archive")
			}
			au, err := url.Parse(cfg.archive.url)
			if err != nil || au.Scheme != "s3" {
				t.Fatalf("--archive %q: want s3://bucket/prefix", cfg.archive.url)
			}
			ep := svc.Environment["AWS_ENDPOINT_URL_S3"]
			if ep == nil {
				t.Fatal("no AWS_ENDPOINT_URL_S3")
			}
			eu, err := url.Parse(*ep)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := p.Services[eu.Hostname()]; !ok {
				t.Errorf("AWS_ENDPOINT_URL_S3 %s names no service", *ep)
			}
			if !cfg.archive.pathStyle {
				t.Error("no --archive-s3-path-style: the S3 server is addressed by service name")
			}
			// The bucket: created by a one-shot service the safekeeper waits for.
			created := false
			for dep, d := range svc.DependsOn {
				initSvc, ok := p.Services[dep]
				if !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
					continue
				}
				for _, w := range append(slices.Clone(initSvc.Entrypoint), initSvc.Command...) {
					created = created || strings.Contains(w, "s3://"+au.Host)
				}
			}
			if !created {
				t.Errorf("no service creating bucket %s that %s depends on with condition %s",
					au.Host, svc.Name, types.ServiceConditionCompletedSuccessfully)
			}
			for _, dep := range []string{"primary", "etcd"} {
				if d, ok := svc.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
					t.Errorf("does not wait for %s to be healthy", dep)
				}
			}
		})
	}

	primary, ok := p.Services["primary"]
	if !ok {
		t.Fatal("no primary")
	}
	settings := postgresSettings(primary.Command)
	ssn, ok := settings["synchronous_standby_names"]
	if !ok {
		t.Fatalf("primary: no synchronous_standby_names in %q", primary.Command)
	}
	m := syncNames.FindStringSubmatch(ssn)
	if m == nil {
		t.Fatalf("primary: synchronous_standby_names %q: want ANY n (names)", ssn)
	}
	if !strings.EqualFold(m[1], "ANY") {
		t.Errorf("primary: synchronous_standby_names %q: want a quorum (ANY)", ssn)
	}
	listed := map[string]bool{}
	for _, n := range strings.Split(m[3], ",") {
		listed[strings.Trim(strings.TrimSpace(n), `"`)] = true
	}
	if len(listed) != len(names) {
		t.Errorf("primary: synchronous_standby_names %q, safekeepers named %v", ssn, names)
	}
	for n := range names {
		if !listed[n] {
			t.Errorf("primary: synchronous_standby_names %q lacks safekeeper %s", ssn, n)
		}
	}
	if n, _ := strconv.Atoi(m[2]); n != 2 {
		t.Errorf("primary: synchronous_standby_names %q: want ANY 2", ssn)
	}
	for k, want := range map[string]string{"wal_level": "replica", "synchronous_commit": "on"} {
		if settings[k] != want {
			t.Errorf("primary: %s = %q, want %q", k, settings[k], want)
		}
	}
	// Three safekeepers plus the standby's base backup (and its WAL stream).
	for _, k := range []string{"max_wal_senders", "max_replication_slots"} {
		if n, err := strconv.Atoi(settings[k]); err != nil || n < len(names)+2 {
			t.Errorf("primary: %s = %q, want at least %d", k, settings[k], len(names)+2)
		}
	}
}

// TestDeployStandbyStreamsThroughSafekeepers: the standby's
// primary_conninfo lists every safekeeper (multi-host) at its replication
// port, and not the primary.
func TestDeployStandbyStreamsThroughSafekeepers(t *testing.T) {
	p := loadCompose(t)
	want := map[string]int{}
	for _, svc := range safekeeperServices(t, p) {
		cfg := parseService(t, p, svc)
		_, port := splitHostPort(t, "--listen-pg", cfg.listenPG)
		want[svc.Name] = port
	}
	standby, ok := p.Services["standby"]
	if !ok {
		t.Fatal("no standby")
	}
	ci, ok := postgresSettings(standby.Command)["primary_conninfo"]
	if !ok {
		t.Fatalf("standby: no primary_conninfo in %q", standby.Command)
	}
	cfg, err := pgconn.ParseConfig(ci)
	if err != nil {
		t.Fatalf("standby: primary_conninfo %q: %v", ci, err)
	}
	hosts := map[string]int{cfg.Host: int(cfg.Port)}
	for _, f := range cfg.Fallbacks {
		hosts[f.Host] = int(f.Port)
	}
	if len(hosts) != len(want) {
		t.Errorf("standby: primary_conninfo hosts %v, want the safekeepers %v", hosts, want)
	}
	for h, port := range want {
		if hosts[h] != port {
			t.Errorf("standby: primary_conninfo %q: want %s at port %d", ci, h, port)
		}
	}
	if cfg.User != "replicator" {
		t.Errorf("standby: primary_conninfo user %q, want replicator", cfg.User)
	}
}

// exportedMetrics returns the metric names the code defines.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for name := range testenv.MetricNames(t) {
		out[name] = true
	}
	return out
}

// dashboardPanel is a panel of the dashboard with its queries.
type dashboardPanel struct {
	title       string
	exprs       []string
	datasources []string // uids
}

// dashboardPanels walks a dashboard (rows' nested panels included) for
// the panels that have queries.
func dashboardPanels(v any) []dashboardPanel {
	var out []dashboardPanel
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if targets, ok := x["targets"].([]any); ok {
				p := dashboardPanel{}
				p.title, _ = x["title"].(string)
				if ds, ok := x["datasource"].(map[string]any); ok {
					uid, _ := ds["uid"].(string)
					p.datasources = append(p.datasources, uid)
				}
				for _, tg := range targets {
					tm, _ := tg.(map[string]any)
					if e, ok := tm["expr"].(string); ok {
						p.exprs = append(p.exprs, e)
					}
					if ds, ok := tm["datasource"].(map[string]any); ok {
						uid, _ := ds["uid"].(string)
						p.datasources = append(p.datasources, uid)
					}
				}
				out = append(out, p)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

// TestDeployDashboardMetrics: every metric the Grafana dashboard queries
// is one the binary exports (histograms with their _bucket, _sum and _count
// series), and the dashboard covers what issue 8 asks for.
func TestDeployDashboardMetrics(t *testing.T) {
	raw, err := os.ReadFile(repoPath(t, "deploy/grafana/dashboards/safekeeper.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("safekeeper.json: %v", err)
	}
	exported := exportedMetrics(t)
	panels := dashboardPanels(dash)
	ident := regexp.MustCompile(`safekeeper_[a-z_]+`)
	used := 0
	for _, p := range panels {
		if len(p.exprs) == 0 {
			t.Errorf("panel %q has no PromQL expr", p.title)
		}
		for _, e := range p.exprs {
			for _, m := range ident.FindAllString(e, -1) {
				used++
				base := m
				if !exported[base] {
					for _, suf := range []string{"_bucket", "_sum", "_count"} {
						base = strings.TrimSuffix(base, suf)
					}
				}
				if !exported[base] {
					t.Errorf("panel %q queries %s, which the binary does not export (expr %q)", p.title, m, e)
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("the dashboard queries no safekeeper metric")
	}
	if len(panels) < 8 {
		t.Errorf("%d panels with queries, want at least 8", len(panels))
	}
	topics := []struct{ topic, re string }{
		{"ingest rate", `\brate\(\s*safekeeper_wal_received_bytes_total\b`},
		{"flush LSN", `\bsafekeeper_flush_lsn\b`},
		{"backup LSN", `\bsafekeeper_backup_lsn\b`},
		{"upstream lag", `\bsafekeeper_upstream_lag_bytes\b`},
		{"consumer lag", `\bsafekeeper_consumer_lag_bytes\b`},
		{"consumers", `\bsafekeeper_consumers\b`},
		{"fsync latency", `\bhistogram_quantile\(.*\bsafekeeper_wal_fsync_seconds_bucket\b`},
		{"archive lag", `\bsafekeeper_archive_lag_bytes\b`},
		{"offloader leader", `\bsafekeeper_offloader_is_leader\b`},
	}
	for _, tp := range topics {
		re := regexp.MustCompile(tp.re)
		found := false
		for _, p := range panels {
			for _, e := range p.exprs {
				found = found || re.MatchString(e)
			}
		}
		if !found {
			t.Errorf("no panel shows %s (an expr matching %s)", tp.topic, tp.re)
		}
	}

	// The panels' datasource is the one Grafana is provisioned with.
	var provisioned struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &provisioned)
	uids := map[string]bool{}
	for _, d := range provisioned.Datasources {
		if d.Type == "prometheus" {
			uids[d.UID] = true
		}
	}
	for _, p := range panels {
		for _, uid := range p.datasources {
			if !uids[uid] {
				t.Errorf("panel %q uses datasource uid %q; provisioned Prometheus uids: %v", p.title, uid, uids)
			}
		}
	}
}

func readYAML(t *testing.T, rel string, v any) {
	t.Helper()
	raw, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// TestDeployDashboardProvisioned: Grafana's provisioning (datasource and
// dashboard provider) is mounted where Grafana reads it, the provider's
// path is where the dashboards directory is mounted, and the datasource
// points at the Prometheus service.
func TestDeployDashboardProvisioned(t *testing.T) {
	p := loadCompose(t)
	grafana, ok := p.Services["grafana"]
	if !ok {
		t.Fatal("no grafana")
	}
	mounts := map[string]string{} // target -> source
	for _, v := range grafana.Volumes {
		if v.Type == types.VolumeTypeBind {
			mounts[v.Target] = v.Source
		}
	}
	if mounts["/etc/grafana/provisioning"] != repoPath(t, "deploy/grafana/provisioning") {
		t.Errorf("grafana: deploy/grafana/provisioning is not mounted at /etc/grafana/provisioning: %v", mounts)
	}
	var providers struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "deploy/grafana/provisioning/dashboards/safekeeper.yml", &providers)
	if len(providers.Providers) == 0 {
		t.Fatal("no dashboard provider")
	}
	for _, pr := range providers.Providers {
		if pr.Type != "file" || mounts[pr.Options.Path] != repoPath(t, "deploy/grafana/dashboards") {
			t.Errorf("dashboard provider reads %q; deploy/grafana/dashboards is mounted at another path: %v", pr.Options.Path, mounts)
		}
	}
	var ds struct {
		Datasources []struct {
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "deploy/grafana/provisioning/datasources/prometheus.yml", &ds)
	for _, d := range ds.Datasources {
		u, err := url.Parse(d.URL)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := p.Services[u.Hostname()]; !ok {
			t.Errorf("datasource url %s names no service", d.URL)
		}
	}
}

// TestDeployPrometheusScrapesSafekeepers: prometheus.yml scrapes every
// safekeeper service at its --listen-http port, and is mounted where the
// Prometheus image reads its configuration.
func TestDeployPrometheusScrapesSafekeepers(t *testing.T) {
	p := loadCompose(t)
	var want []string
	for _, svc := range safekeeperServices(t, p) {
		cfg := parseService(t, p, svc)
		_, port := splitHostPort(t, "--listen-http", cfg.listenHTTP)
		want = append(want, net.JoinHostPort(svc.Name, strconv.Itoa(port)))
	}
	if !slices.Equal(want, []string{"sk1:7676", "sk2:7676", "sk3:7676"}) {
		t.Errorf("safekeepers serve metrics at %v", want)
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			Scheme        string `yaml:"scheme"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "deploy/prometheus/prometheus.yml", &prom)
	scraped := map[string]bool{}
	for _, sc := range prom.ScrapeConfigs {
		if (sc.MetricsPath != "" && sc.MetricsPath != "/metrics") || (sc.Scheme != "" && sc.Scheme != "http") {
			continue
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				scraped[tg] = true
			}
		}
	}
	for _, w := range want {
		if !scraped[w] {
			t.Errorf("prometheus.yml does not scrape http://%s/metrics (targets %v)", w, scraped)
		}
	}
	prometheus, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus")
	}
	mounted := false
	for _, v := range prometheus.Volumes {
		mounted = mounted || (v.Type == types.VolumeTypeBind && v.Source == repoPath(t, "deploy/prometheus/prometheus.yml") &&
			v.Target == "/etc/prometheus/prometheus.yml")
	}
	if !mounted {
		t.Error("prometheus: deploy/prometheus/prometheus.yml is not mounted at /etc/prometheus/prometheus.yml")
	}
}

// dockerfileStage is one FROM ... stage of a Dockerfile, its instructions
// with continuation lines joined.
type dockerfileStage struct {
	from  string
	instr [][2]string // instruction (upper case), arguments
}

func parseDockerfile(src string) []dockerfileStage {
	var stages []dockerfileStage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		ins, args, _ := strings.Cut(line, " ")
		ins = strings.ToUpper(ins)
		args = strings.TrimSpace(args)
		if ins == "FROM" {
			stages = append(stages, dockerfileStage{from: args})
			return
		}
		if len(stages) > 0 {
			s := &stages[len(stages)-1]
			s.instr = append(s.instr, [2]string{ins, args})
		}
	}
	for _, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if c, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(t)
		flush()
	}
	flush()
	return stages
}

// TestDeployDockerfile: the Dockerfile builds the static binary with the
// Go of go.mod in a build stage and runs it from a distroless/static image
// as a non-root user, with the ports and volume the compose file uses.
func TestDeployDockerfile(t *testing.T) {
	raw, err := os.ReadFile(repoPath(t, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	stages := parseDockerfile(string(raw))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a build stage and a final one", len(stages))
	}

	gomod, err := os.ReadFile(repoPath(t, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goLine == nil {
		t.Fatal("go.mod: no go line")
	}
	build := stages[0]
	image, _, _ := strings.Cut(build.from, " ")
	if tag, ok := strings.CutPrefix(image, "golang:"); !ok ||
		!regexp.MustCompile(`^`+regexp.QuoteMeta(string(goLine[1]))+`(\.\d+)?(-|$)`).MatchString(tag) {
		t.Errorf("build stage FROM %q: want golang:%s (go.mod's go line)", build.from, goLine[1])
	}
	static := false
	for _, in := range build.instr {
		static = static || (in[0] == "RUN" && strings.Contains(in[1], "CGO_ENABLED=0") &&
			strings.Contains(in[1], "go build") && strings.Contains(in[1], "./cmd/safekeeper"))
	}
	if !static {
		t.Error("build stage: no RUN CGO_ENABLED=0 go build ... ./cmd/safekeeper")
	}

	final := stages[len(stages)-1]
	if !strings.Contains(final.from, "distroless/static") {
		t.Errorf("final stage FROM %q: want gcr.io/distroless/static", final.from)
	}
	nonRoot := strings.Contains(final.from, ":nonroot")
	var entrypoint string
	exposed := map[string]bool{}
	volumes := ""
	for _, in := range final.instr {
		switch in[0] {
		case "USER":
			user, _, _ := strings.Cut(in[1], ":")
			if user == "root" || user == "0" {
				t.Errorf("final stage: USER %s", in[1])
				nonRoot = false
			} else {
				nonRoot = true
			}
		case "ENTRYPOINT":
			entrypoint = in[1]
		case "EXPOSE":
			for _, p := range strings.Fields(in[1]) {
				port, _, _ := strings.Cut(p, "/")
				exposed[port] = true
			}
		case "VOLUME":
			volumes += " " + in[1]
		}
	}
	if !nonRoot {
		t.Error("final stage runs as root: want a :nonroot base or USER with a non-root uid")
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || !slices.Equal(ep, []string{"/safekeeper"}) {
		t.Errorf("final stage: ENTRYPOINT %s, want [\"/safekeeper\"] (compose commands start with run)", entrypoint)
	}
	for _, port := range []string{"5454", "7676"} {
		if !exposed[port] {
			t.Errorf("final stage does not EXPOSE %s", port)
		}
	}
	if !strings.Contains(volumes, "/data") {
		t.Error("final stage: no VOLUME /data")
	}

	ignore, err := os.ReadFile(repoPath(t, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "bin/", ".tools/", ".cache/", "demo-data/"} {
		if !slices.Contains(strings.Fields(string(ignore)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}
