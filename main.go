// Command charond runs Ansible playbook jobs submitted over HTTP, by priority, and streams
// every job's output and status changes to any number of clients over Server-Sent Events.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is everything the flags set.
type config struct {
	Addr            string
	Workers         int
	AnsiblePlaybook string
	PlaybookDir     string
	DataDir         string
	DefaultTimeout  time.Duration
	MaxTimeout      time.Duration
	KillGrace       time.Duration
	Heartbeat       time.Duration
	WriteTimeout    time.Duration
	MaxBody         int64
	MaxLine         int
	CORSOrigins     string
	Retention       time.Duration
	MaxJobs         int
	DrainTimeout    time.Duration
	Token           string
	TokenFile       string
	InsecureNoAuth  bool
	TLSCert         string
	TLSKey          string
	EnvAllow        string
	MaxQueue        int
	MaxStreams      int
	ReadHeaderTime  time.Duration
	IdleTimeout     time.Duration
	MaxHeaderBytes  int
	ReadBodyTimeout time.Duration
	AllowedHosts    string
	PlaybooksOnly   bool
	AllowVars       string
	AllowJinjaVars  bool
	ShowVersion     bool
}

// parseFlags reads the command line; flags that have an environment variable take their
// default from it, so a flag given explicitly always wins.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("charond", flag.ContinueOnError)
	fs.SetOutput(out)
	env := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	envInt := func(name string, fallback int) int {
		if n, err := strconv.Atoi(getenv(name)); err == nil {
			return n
		}
		return fallback
	}
	fs.StringVar(&c.Addr, "addr", env("CHARON_ADDR", "127.0.0.1:8080"),
		"Address to listen on, host:port. Env CHARON_ADDR.")
	fs.IntVar(&c.Workers, "workers", envInt("CHARON_WORKERS", runtime.NumCPU()),
		"How many jobs run at once; the rest wait in the queue by priority. Env CHARON_WORKERS.")
	fs.StringVar(&c.AnsiblePlaybook, "ansible-playbook", env("CHARON_ANSIBLE_PLAYBOOK", "ansible-playbook"),
		"The ansible-playbook to run: a path, or a name looked up in PATH. Env CHARON_ANSIBLE_PLAYBOOK.")
	fs.StringVar(&c.PlaybookDir, "playbook-dir", env("CHARON_PLAYBOOK_DIR", "."),
		"Directory that external playbook paths are resolved against and must stay inside. Env CHARON_PLAYBOOK_DIR.")
	fs.StringVar(&c.DataDir, "data-dir", env("CHARON_DATA_DIR", "./charon-data"),
		"Directory for charond's state: each running job's work dir (inventory, variables, embedded playbook). Env CHARON_DATA_DIR.")
	fs.DurationVar(&c.DefaultTimeout, "default-timeout", time.Hour,
		"Timeout of a job that sets none (or 0).")
	fs.DurationVar(&c.MaxTimeout, "max-timeout", 24*time.Hour,
		"Largest timeout a job may ask for; a larger one is refused with 400.")
	fs.DurationVar(&c.KillGrace, "kill-grace", 10*time.Second,
		"How long a cancelled or timed-out job's processes have between SIGTERM and SIGKILL.")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 15*time.Second,
		"How often an idle SSE stream sends a ': ping' comment, which keeps proxies from closing it.")
	fs.DurationVar(&c.WriteTimeout, "stream-write-timeout", 30*time.Second,
		"How long one write to a client (an SSE stream's, or any answer's) may block before the client is dropped; the job never waits for it.")
	fs.Int64Var(&c.MaxBody, "max-body", 1<<20,
		"Largest job submission accepted, in bytes; a larger one is answered 413.")
	fs.IntVar(&c.MaxLine, "max-line", 64<<10,
		"Longest output line kept, in bytes; a longer line keeps its start and says how much was cut.")
	fs.StringVar(&c.CORSOrigins, "cors-origins", env("CHARON_CORS_ORIGINS", ""),
		"Comma-separated origins whose browser pages may call the API, or * for any. Empty allows none. Env CHARON_CORS_ORIGINS.")
	fs.DurationVar(&c.Retention, "retention", 30*24*time.Hour,
		"How long finished jobs and their logs are kept; older ones are deleted.")
	fs.IntVar(&c.MaxJobs, "max-jobs", 10000,
		"How many jobs are kept at most; beyond it the oldest finished jobs are deleted with their logs.")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 0,
		"On SIGTERM or SIGINT, first wait up to this long for running jobs to finish (new submissions get 503), "+
			"then cancel what is left. 0 cancels at once. Queued jobs stay queued for the next start either way.")
	fs.StringVar(&c.Token, "token", env("CHARON_TOKEN", ""),
		"Bearer token that every /api/ route requires (stream routes also take ?access_token=). Env CHARON_TOKEN. "+
			"Prefer the environment or -token-file: a flag shows in the process list.")
	fs.StringVar(&c.TokenFile, "token-file", env("CHARON_TOKEN_FILE", ""),
		"File holding the bearer token, instead of -token. Env CHARON_TOKEN_FILE.")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", false,
		"Allow listening on a non-loopback -addr without a token. Anyone who can reach charond can then run playbooks.")
	fs.StringVar(&c.TLSCert, "tls-cert", env("CHARON_TLS_CERT", ""),
		"TLS certificate file (PEM); with -tls-key, charond serves HTTPS. Env CHARON_TLS_CERT.")
	fs.StringVar(&c.TLSKey, "tls-key", env("CHARON_TLS_KEY", ""),
		"TLS private key file (PEM), with -tls-cert. Env CHARON_TLS_KEY.")
	fs.StringVar(&c.EnvAllow, "env-allow", env("CHARON_ENV_ALLOW", "PATH,HOME,LANG,LC_*,USER,TMPDIR,ANSIBLE_*,SSH_AUTH_SOCK"),
		"Comma-separated names of charond's environment variables that jobs inherit; a trailing * matches a prefix. "+
			"The rest, CHARON_TOKEN included, never reaches a playbook. Env CHARON_ENV_ALLOW.")
	fs.IntVar(&c.MaxQueue, "max-queue", 1000,
		"Most jobs that may wait in the queue; a submission beyond it gets 429 with Retry-After.")
	fs.IntVar(&c.MaxStreams, "max-streams", 1000,
		"Most SSE streams open at once; one more gets 503 with Retry-After.")
	fs.DurationVar(&c.ReadHeaderTime, "read-header-timeout", 10*time.Second,
		"How long a client may take to send its request headers.")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute,
		"How long an idle keep-alive connection stays open between requests.")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", 64<<10,
		"Largest request header block accepted, in bytes.")
	fs.DurationVar(&c.ReadBodyTimeout, "read-body-timeout", 30*time.Second,
		"How long a client may take to send a request body (streams excepted); a slower one gets 408.")
	fs.StringVar(&c.AllowedHosts, "allowed-hosts", env("CHARON_ALLOWED_HOSTS", ""),
		"Comma-separated host names that requests may name in their Host header besides localhost, 127.0.0.1 and [::1] "+
			"(the name a reverse proxy passes on, say). Others get 421, which stops DNS rebinding. "+
			"When -addr is not loopback and this is empty, any Host is answered. Env CHARON_ALLOWED_HOSTS.")
	fs.BoolVar(&c.PlaybooksOnly, "playbooks-only", false,
		"For untrusted submitters: refuse embedded playbooks (403), so jobs can only run the playbooks in -playbook-dir, "+
			"and refuse variables named ansible_* (which choose interpreters, shells, connections and their commands) "+
			"unless -allow-vars names them.")
	fs.StringVar(&c.AllowVars, "allow-vars", env("CHARON_ALLOW_VARS", ""),
		"With -playbooks-only: comma-separated ansible_* variable names that jobs may still set (a trailing * matches a prefix), "+
			"such as ansible_user,ansible_port. Env CHARON_ALLOW_VARS.")
	fs.BoolVar(&c.AllowJinjaVars, "allow-jinja-in-vars", false,
		"Let Ansible template the values of job variables ({{ }} runs there, lookups included). "+
			"By default they are handed over as text Ansible never templates (YAML !unsafe), like AWX's launch-time extra vars.")
	fs.BoolVar(&c.ShowVersion, "version", false, "Print the version and exit.")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: charond takes flags only (see -h)", fs.Arg(0))
	}
	return c, c.validate()
}

func (c *config) validate() error {
	switch {
	case c.Workers < 1:
		return fmt.Errorf("-workers must be at least 1, not %d", c.Workers)
	case c.DefaultTimeout <= 0 || c.MaxTimeout <= 0:
		return errors.New("-default-timeout and -max-timeout must be positive")
	case c.DefaultTimeout > c.MaxTimeout:
		return fmt.Errorf("-default-timeout (%s) must not exceed -max-timeout (%s)", c.DefaultTimeout, c.MaxTimeout)
	case c.KillGrace < 0 || c.Heartbeat <= 0 || c.WriteTimeout <= 0:
		return errors.New("-kill-grace must not be negative; -heartbeat and -stream-write-timeout must be positive")
	case c.MaxBody < 1 || c.MaxLine < 1:
		return errors.New("-max-body and -max-line must be at least 1")
	case c.Retention <= 0 || c.MaxJobs < 1 || c.DrainTimeout < 0:
		return errors.New("-retention and -max-jobs must be positive; -drain-timeout must not be negative")
	case c.MaxQueue < 1 || c.MaxStreams < 1 || c.MaxHeaderBytes < 1 || c.ReadHeaderTime <= 0 || c.IdleTimeout <= 0 || c.ReadBodyTimeout <= 0:
		return errors.New("-max-queue, -max-streams, -max-header-bytes, -read-header-timeout, -read-body-timeout and -idle-timeout must be positive")
	case c.PlaybooksOnly && c.AllowJinjaVars:
		return errors.New("-allow-jinja-in-vars lets a variable run commands through lookups, which -playbooks-only exists to prevent: use one or the other")
	case c.AllowVars != "" && !c.PlaybooksOnly:
		return errors.New("-allow-vars only means something with -playbooks-only: without it every variable is allowed")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("-tls-cert and -tls-key go together: give both or neither")
	}
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "charond:", err)
		os.Exit(1)
	}
}

// run is main without os.Exit, so deferred cleanup always runs.
func run(args []string) error {
	cfg, err := parseFlags(args, os.Getenv, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.ShowVersion {
		fmt.Println("charond", version)
		return nil
	}
	token, err := loadToken(cfg.Token, cfg.TokenFile)
	if err != nil {
		return err
	}
	cfg.Token = token
	if err := checkAuthSettings(cfg); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	d, err := newDaemon(cfg, logger)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	return d.serve(ctx, ln)
}

// checkAuthSettings refuses settings that would let anyone who can reach charond, or any web
// page its user opens, run playbooks.
func checkAuthSettings(cfg *config) error {
	if err := checkToken(cfg.Token); err != nil {
		return err
	}
	if cfg.Token != "" || cfg.InsecureNoAuth {
		return nil
	}
	if !isLoopback(cfg.Addr) {
		return fmt.Errorf("refusing to listen on %s without a token: anyone who can reach it could run playbooks; "+
			"set CHARON_TOKEN or -token-file, or pass -insecure-no-auth", cfg.Addr)
	}
	for _, o := range splitList(cfg.CORSOrigins) {
		if o == "*" {
			return errors.New("refusing -cors-origins * without a token: every web page the user opens could run playbooks; " +
				"list the origins, set CHARON_TOKEN or -token-file, or pass -insecure-no-auth")
		}
	}
	return nil
}

// daemon is charond wired together: scheduler, HTTP server and settings.
type daemon struct {
	cfg      *config
	log      *slog.Logger
	sched    *scheduler
	srv      *server
	stopping chan struct{} // closed once jobs have stopped at shutdown: ends remaining streams
}

// newDaemon checks the settings against the machine and wires the parts; it starts nothing.
func newDaemon(cfg *config, logger *slog.Logger) (*daemon, error) {
	playbookDir, err := realDir(cfg.PlaybookDir)
	if err != nil {
		return nil, fmt.Errorf("-playbook-dir: %w", err)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	st, records, err := openStore(dataDir, logger)
	if err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	// Real, like playbookDir, so that a playbook path can be checked against both.
	realDataDir, err := realDir(st.dir)
	if err != nil {
		return nil, fmt.Errorf("-data-dir: %w", err)
	}
	r := &runner{
		playbookDir:  playbookDir,
		dataDir:      realDataDir,
		templateVars: cfg.AllowJinjaVars,
		envAllow:     splitList(cfg.EnvAllow),
		playbookCmd:  cfg.AnsiblePlaybook,
		workRoot:     filepath.Join(dataDir, "work"),
		killGrace:    cfg.KillGrace,
		maxLine:      cfg.MaxLine,
		// Before restore: it sweeps the job cgroups a crashed charond on this data dir left.
		contain:   newContainment(dataDir, logger),
		noteFault: st.noteFault,
	}
	sched := newScheduler(r, st, logger)
	sched.retention, sched.maxJobs, sched.maxQueue = cfg.Retention, cfg.MaxJobs, cfg.MaxQueue
	if err := sched.restore(records); err != nil {
		return nil, fmt.Errorf("load jobs from %s: %w", dataDir, err)
	}
	stopping := make(chan struct{})
	srv := &server{
		sched: sched,
		log:   logger,
		limits: specLimits{PlaybookDir: playbookDir, DataDir: realDataDir, DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout,
			MaxExpanded: 2 * cfg.MaxBody, PlaybooksOnly: cfg.PlaybooksOnly, AllowVars: splitList(cfg.AllowVars)},
		maxBody: cfg.MaxBody,
		stream: streamConfig{Heartbeat: cfg.Heartbeat, WriteTimeout: cfg.WriteTimeout, Retry: 3 * time.Second,
			Stopping: stopping, Log: logger},
		corsOrigins: splitList(cfg.CORSOrigins),
		workers:     cfg.Workers,
		token:       cfg.Token,
		maxStreams:  int64(cfg.MaxStreams),
		hosts:       newHostGuard(cfg.Addr, splitList(cfg.AllowedHosts)),
		bodyTimeout: cfg.ReadBodyTimeout,
	}
	return &daemon{cfg: cfg, log: logger, sched: sched, srv: srv, stopping: stopping}, nil
}

// realDir makes dir absolute with symlinks resolved, so containment checks compare real paths.
func realDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !info.IsDir() {
		return "", fmt.Errorf("%s is not a directory", real)
	}
	return real, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// serve runs the daemon on ln until ctx ends, then shuts down: no new jobs, running ones
// cancelled, open streams ended with their final events.
func (d *daemon) serve(ctx context.Context, ln net.Listener) error {
	d.srv.ansibleVersion = d.checkAnsible()
	d.sched.start(d.cfg.Workers)
	d.sched.prune()
	pruneCtx, stopPruning := context.WithCancel(context.Background())
	pruneDone := make(chan struct{})
	go func() {
		defer close(pruneDone)
		d.pruneEvery(pruneCtx, time.Hour)
	}()
	// Pruning ends before the store closes.
	defer func() { stopPruning(); <-pruneDone }()
	// So does the data dir probe, whose recovery rewrites the journal.
	stopProbe := d.sched.startStoreProbe(storeProbeInterval)
	defer stopProbe()
	httpSrv := &http.Server{
		Handler: d.srv.routes(),
		// Slow clients may not hold a connection open before sending their headers...
		ReadHeaderTimeout: d.cfg.ReadHeaderTime,
		// ...nor sit idle between requests for long. There is deliberately no WriteTimeout:
		// streams last as long as their job; each stream write has its own deadline instead.
		IdleTimeout:    d.cfg.IdleTimeout,
		MaxHeaderBytes: d.cfg.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	d.log.Info("charond listening", "addr", ln.Addr().String(), "tls", d.cfg.TLSCert != "", "auth", d.srv.token != "", "workers", d.cfg.Workers,
		"playbook_dir", d.srv.limits.PlaybookDir, "data_dir", d.cfg.DataDir, "ansible_playbook", d.srv.ansibleVersion)

	served := make(chan error, 1)
	go func() {
		if d.cfg.TLSCert != "" {
			served <- httpSrv.ServeTLS(ln, d.cfg.TLSCert, d.cfg.TLSKey)
		} else {
			served <- httpSrv.Serve(jsonErrorListener{ln})
		}
	}()
	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopPruning()
	<-pruneDone
	stopProbe()
	d.shutdown(httpSrv)
	return nil
}

// shutdown stops the daemon: no new jobs, running ones drained or cancelled, open streams
// ended with their final events, then the store closed.
func (d *daemon) shutdown(httpSrv *http.Server) {
	d.log.Info("shutting down", "drain_timeout", d.cfg.DrainTimeout)
	// Jobs get -kill-grace to end after SIGTERM; a few seconds more cover reaping and the
	// final events.
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout+d.cfg.KillGrace+3*time.Second)
	defer cancel()
	if err := d.sched.shutdown(sctx, d.cfg.DrainTimeout); err != nil {
		d.log.Warn("shutdown", "err", err)
	}
	close(d.stopping)
	if err := httpSrv.Shutdown(sctx); err != nil {
		d.log.Warn("closing open connections", "err", err)
		httpSrv.Close()
	}
	d.sched.close()
	d.log.Info("charond stopped")
}

// pruneEvery deletes expired jobs periodically until ctx ends.
func (d *daemon) pruneEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.sched.prune()
		}
	}
}

// checkAnsible asks ansible-playbook for its version. When it is missing charond still runs,
// warns loudly, and every job fails saying how to install it.
func (d *daemon) checkAnsible() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := d.sched.runner.version(ctx)
	if err != nil {
		d.log.Warn("ANSIBLE-PLAYBOOK NOT USABLE: every job will fail until it is installed",
			"err", err,
			"fix", "install ansible-core (apt-get install ansible-core, or pipx install ansible-core) or set -ansible-playbook")
		return "unavailable: " + err.Error()
	}
	return v
}
