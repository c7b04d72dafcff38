package main

// This file holds the daemon's life: newDaemon wires the parts and does everything that can
// fail, start listens and starts the rest, stop ends it. main (through run) and the tests all
// go through these.

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// daemon is charond wired together: scheduler, HTTP server and settings. newDaemon makes one
// and does everything that can fail but the listen; start listens and starts the rest; stop
// ends it. main (through run) and the tests all go through these three.
type daemon struct {
	cfg      *config
	log      *slog.Logger
	sched    *scheduler
	srv      *server
	tls      *tls.Config   // the loaded -tls-cert and -tls-key; nil serves plain HTTP
	stopping chan struct{} // closed once jobs have stopped at shutdown: ends remaining streams

	// How often the pruner and the store probe run. Tests that probe the store themselves,
	// at the moments they choose, make the probe's interval longer than they last.
	pruneInterval, probeInterval time.Duration

	// Set by start, for stop.
	addr           string // where the listener is, host:port
	httpSrv        *http.Server
	served         chan struct{} // closed when Serve has returned, with serveErr set
	serveErr       error
	stopBackground func() // ends the pruner and the store probe, and waits for them
}

// newDaemon checks the settings against the machine, opens the store, restores its jobs and
// wires the parts; it starts nothing. The TLS key pair is loaded first: a refused setting
// leaves the data dir untouched.
func newDaemon(cfg *config, logger *slog.Logger) (*daemon, error) {
	tlsConfig, err := loadTLS(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	vault, err := vaultArgs(cfg.VaultPassFile, cfg.VaultIDs)
	if err != nil {
		return nil, err
	}
	hooksCfg, err := webhookSettings(cfg)
	if err != nil {
		return nil, err
	}
	// The webhooks report deliveries to the scheduler, which is made once the store is open.
	var sched *scheduler
	hooks, err := newWebhooks(hooksCfg, logger, func(jobID string) { sched.webhookDone(jobID) })
	if err != nil {
		return nil, err
	}
	playbookDir, err := realDir(cfg.PlaybookDir)
	if err != nil {
		return nil, fmt.Errorf("-playbook-dir: %w", err)
	}
	inventoryDir := playbookDir
	if cfg.InventoryDir != "" {
		if inventoryDir, err = realDir(cfg.InventoryDir); err != nil {
			return nil, fmt.Errorf("-inventory-dir: %w", err)
		}
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
		inventoryDir: inventoryDir,
		templateVars: cfg.AllowJinjaVars,
		vaultArgs:    vault,
		envAllow:     splitList(cfg.EnvAllow),
		playbookCmd:  cfg.AnsiblePlaybook,
		workRoot:     filepath.Join(dataDir, "work"),
		killGrace:    cfg.KillGrace,
		maxLine:      cfg.MaxLine,
		// Before restore: it sweeps the job cgroups a crashed charond on this data dir left.
		contain:   newContainment(dataDir, logger),
		noteFault: st.noteFault,
	}
	sched = newScheduler(r, st, logger)
	sched.retention, sched.maxJobs, sched.maxQueue = cfg.Retention, cfg.MaxJobs, cfg.MaxQueue
	st.journal.fsyncTime = sched.metrics.fsync
	if len(hooksCfg.URLs) > 0 {
		hooks.outcome = sched.metrics.webhookOutcome
		sched.hooks = hooks
	}
	st.feed.keep = feedKeepPerJob * cfg.MaxJobs
	if err := sched.restore(records); err != nil {
		return nil, fmt.Errorf("load jobs from %s: %w", dataDir, err)
	}
	stopping := make(chan struct{})
	srv := &server{
		sched: sched,
		log:   logger,
		limits: specLimits{PlaybookDir: playbookDir, DataDir: realDataDir, DefaultTimeout: cfg.DefaultTimeout, MaxTimeout: cfg.MaxTimeout,
			MaxExpanded: 2 * cfg.MaxBody, PlaybooksOnly: cfg.PlaybooksOnly, AllowVars: splitList(cfg.AllowVars), MaxForks: cfg.MaxForks, InventoryDir: inventoryDir,
			DefaultIdleTimeout: cfg.DefaultIdle},
		maxBody: cfg.MaxBody,
		stream: streamConfig{Heartbeat: cfg.Heartbeat, WriteTimeout: cfg.WriteTimeout, Retry: 3 * time.Second,
			Stopping: stopping, Log: logger},
		corsOrigins: splitList(cfg.CORSOrigins),
		workers:     cfg.Workers,
		token:       cfg.Token,
		maxStreams:  int64(cfg.MaxStreams),
		hosts:       newHostGuard(cfg.Addr, splitList(cfg.AllowedHosts)),
		bodyTimeout: cfg.ReadBodyTimeout,
		web:         loadWebAssets(),
	}
	return &daemon{cfg: cfg, log: logger, sched: sched, srv: srv, tls: tlsConfig, stopping: stopping,
		// Retention is counted in days: pruning hourly keeps within an hour of it.
		pruneInterval: time.Hour, probeInterval: storeProbeInterval}, nil
}

// loadTLS loads the key pair that -tls-cert and -tls-key name, or returns nil without them.
// ServeTLS would load it too, but only once workers were running and "listening" was logged.
func loadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("-tls-key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert %s and -tls-key %s: %w", certFile, keyFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
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

// run starts the daemon, and stops it when ctx ends or the HTTP server fails.
func (d *daemon) run(ctx context.Context) error {
	if err := d.start(); err != nil {
		return err
	}
	var err error
	select {
	case <-d.served:
		err = fmt.Errorf("serve: %w", d.serveErr)
	case <-ctx.Done():
	}
	d.stop() // logs what went wrong; the exit status stays 0 for a shutdown asked for
	return err
}

// start listens on -addr and, once the listener is open, logs "charond listening" and starts
// everything: the workers (restored queued jobs begin here), the pruner, the store probe and
// the HTTP server. Listening is the only step that can fail, and it comes first, so a failed
// start has started nothing; it closes the store, since this daemon will not run.
func (d *daemon) start() error {
	ln, err := net.Listen("tcp", d.cfg.Addr)
	if err != nil {
		d.sched.close()
		return fmt.Errorf("listen on %s: %w", d.cfg.Addr, err)
	}
	d.addr = ln.Addr().String()
	d.srv.ansibleVersion, d.srv.ansibleErr = d.checkAnsible()
	d.httpSrv = d.newHTTPServer()
	d.log.Info("charond listening", "addr", d.addr, "tls", d.tls != nil, "auth", d.srv.token != "", "workers", d.cfg.Workers,
		"playbook_dir", d.srv.limits.PlaybookDir, "data_dir", d.cfg.DataDir, "ansible_playbook", d.srv.ansibleVersion)

	d.sched.startWebhooks(d.publicURL())
	d.sched.start(d.cfg.Workers)
	d.stopBackground = d.startBackground()
	d.served = make(chan struct{})
	// Ends when stop shuts the HTTP server down, or when serving fails (run then stops).
	go func() {
		defer close(d.served)
		d.serveErr = d.serve(ln)
	}()
	return nil
}

// publicURL is -public-url, or else the address charond listens on.
func (d *daemon) publicURL() string {
	if d.cfg.PublicURL != "" {
		return d.cfg.PublicURL
	}
	if d.tls != nil {
		return "https://" + d.addr
	}
	return "http://" + d.addr
}

// newHTTPServer is the server that answers on the listener.
func (d *daemon) newHTTPServer() *http.Server {
	return &http.Server{
		Handler: d.srv.routes(),
		// Slow clients may not hold a connection open before sending their headers...
		ReadHeaderTimeout: d.cfg.ReadHeaderTime,
		// ...nor sit idle between requests for long. There is deliberately no WriteTimeout:
		// streams last as long as their job; each stream write has its own deadline instead.
		IdleTimeout:    d.cfg.IdleTimeout,
		MaxHeaderBytes: d.cfg.MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
		TLSConfig:      d.tls,
	}
}

// serve answers on ln until the server is shut down: HTTPS (with HTTP/2, which ServeTLS sets
// up) when a key pair was loaded, else plain HTTP with net/http's own error answers made JSON.
func (d *daemon) serve(ln net.Listener) error {
	if d.tls != nil {
		return d.httpSrv.ServeTLS(ln, "", "") // the certificate is in TLSConfig already
	}
	return d.httpSrv.Serve(jsonErrorListener{ln})
}

// startBackground prunes once, then starts the pruner and the store probe. The function it
// returns ends both and waits for them.
func (d *daemon) startBackground() (stop func()) {
	d.sched.prune()
	stopPruning := every(d.pruneInterval, d.sched.prune)
	stopProbe := d.sched.startStoreProbe(d.probeInterval)
	return func() {
		stopPruning()
		stopProbe()
	}
}

// every calls f every interval in a goroutine of its own until stop, which ends it and waits
// for it (and for a call of f under way). stop may be called more than once.
func every(interval time.Duration, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// stop ends a started daemon, as on SIGTERM: first the pruner and the store probe, which
// write to the store (the probe's recovery rewrites the journal), then the rest as shutdown
// says. It returns what shutdown returns. It is called once.
func (d *daemon) stop() error {
	d.stopBackground()
	err := d.shutdown()
	<-d.served
	return err
}

// shutdown stops the daemon: no new jobs, running ones drained or cancelled, open streams
// ended with their final events, then the store closed. What goes wrong is logged; the error
// of stopping the jobs is returned as well, so that a test can fail on it.
func (d *daemon) shutdown() error {
	httpSrv := d.httpSrv
	d.log.Info("shutting down", "drain_timeout", d.cfg.DrainTimeout)
	// Jobs get -kill-grace to end after SIGTERM; a few seconds more cover reaping and the
	// final events.
	sctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout+d.cfg.KillGrace+3*time.Second)
	defer cancel()
	jobsErr := d.sched.shutdown(sctx, d.cfg.DrainTimeout)
	if jobsErr != nil {
		d.log.Warn("shutdown", "err", jobsErr)
	}
	close(d.stopping)
	if err := httpSrv.Shutdown(sctx); err != nil {
		d.log.Warn("closing open connections", "err", err)
		httpSrv.Close()
	}
	d.sched.close()
	d.log.Info("charond stopped")
	return jobsErr
}

// checkAnsible asks ansible-playbook for its version. When it is missing charond still runs,
// warns loudly, and every job fails saying how to install it.
func (d *daemon) checkAnsible() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := d.sched.runner.version(ctx)
	if err != nil {
		d.log.Warn("ANSIBLE-PLAYBOOK NOT USABLE: every job will fail until it is installed",
			"err", err,
			"fix", "install ansible-core (apt-get install ansible-core, or pipx install ansible-core) or set -ansible-playbook")
		return "unavailable: " + err.Error(), err
	}
	return v, nil
}
