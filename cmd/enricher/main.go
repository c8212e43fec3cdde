// Command enricher consumes flow messages from Kafka, adds who the traffic
// is, and produces them to another topic exactly once. See the enricher
// package for how.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/spendletonliveaction/flow-pipeline/enricher"
	"github.com/spendletonliveaction/flow-pipeline/enricher/sources"
	"github.com/spendletonliveaction/flow-pipeline/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// flagOf maps the enricher.Config fields that errors name to their flags.
var flagOf = map[string]string{
	"Brokers":             "-kafka.brokers",
	"Topic":               "-kafka.topic",
	"Group":               "-kafka.group",
	"OutTopic":            "-kafka.out.topic",
	"DLQTopic":            "-kafka.dlq",
	"TransactionalID":     "-kafka.transactional.id",
	"TransactionInterval": "-kafka.transaction.interval",
	"TransactionRecords":  "-kafka.transaction.records",
	"TransactionBytes":    "-kafka.transaction.bytes",
	"TransactionTimeout":  "-kafka.transaction.timeout",
	"SessionTimeout":      "-kafka.session.timeout",
	"ShutdownTimeout":     "-shutdown.timeout",
	"CountryFile":         "-geo.country",
	"ASNFiles":            "-geo.asn",
	"NetworksFile":        "-networks",
	"ExportersFile":       "-exporters",
	"PollInterval":        "-sources.poll",
}

// flags holds what the command line sets beside the enricher.Config.
type flags struct {
	brokers                          string
	metricsAddr, logLevel, logFormat string
	probe                            string
	asnOverride                      bool
	enrich                           onOff
}

// onOff is a boolean flag that also reads on/off, the words compose/.env's
// ENRICHMENT uses.
type onOff bool

func (b *onOff) String() string {
	if b == nil || !bool(*b) {
		return "false"
	}
	return "true"
}

func (b *onOff) Set(s string) error {
	switch strings.ToLower(s) {
	case "on":
		*b = true
		return nil
	case "off":
		*b = false
		return nil
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not on, off, true or false", s)
	}
	*b = onOff(v)
	return nil
}

func (*onOff) IsBoolFlag() bool { return true }

// listFlag is a repeatable string flag; a comma also separates values.
type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	*l.v = append(*l.v, cli.SplitList(s)...)
	return nil
}

// newFlagSet binds the flags to cfg, which holds enricher.DefaultConfig().
func newFlagSet(out io.Writer, cfg *enricher.Config, scfg *sources.Config) (*flag.FlagSet, *flags) {
	f := &flags{enrich: true}
	fs := flag.NewFlagSet("enricher", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&f.brokers, "kafka.brokers", strings.Join(cfg.Brokers, ","), "Kafka brokers, comma-separated")
	fs.StringVar(&cfg.Topic, "kafka.topic", cfg.Topic, "topic of length-delimited FlowMessages to consume")
	fs.StringVar(&cfg.Group, "kafka.group", cfg.Group, "consumer group; enrichers in one group share the partitions")
	fs.StringVar(&cfg.OutTopic, "kafka.out.topic", cfg.OutTopic, "topic the enriched messages go to (same framing; record i of input partition p goes to partition p modulo its partition count)")
	fs.StringVar(&cfg.DLQTopic, "kafka.dlq", cfg.DLQTopic, "dead-letter topic for undecodable records, written in the same transaction (empty: count and drop them)")
	fs.StringVar(&cfg.TransactionalID, "kafka.transactional.id", cfg.TransactionalID, "this instance's transactional id: stable across its restarts, unique among running instances")
	fs.DurationVar(&cfg.TransactionInterval, "kafka.transaction.interval", cfg.TransactionInterval, "commit a transaction at most this long after it began; read_committed readers see flows only then, so it is the latency the enricher adds")
	fs.IntVar(&cfg.TransactionRecords, "kafka.transaction.records", cfg.TransactionRecords, "commit sooner at this many input records")
	fs.IntVar(&cfg.TransactionBytes, "kafka.transaction.bytes", cfg.TransactionBytes, "commit sooner at this many output bytes")
	fs.DurationVar(&cfg.TransactionTimeout, "kafka.transaction.timeout", cfg.TransactionTimeout, "the broker aborts a transaction left open this long (a crashed instance that is not restarted)")
	fs.DurationVar(&cfg.SessionTimeout, "kafka.session.timeout", cfg.SessionTimeout, "consumer group session timeout: how soon a dead instance's partitions move")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown.timeout", cfg.ShutdownTimeout, "on SIGTERM, commit the open transaction within this time")
	fs.StringVar(&scfg.CountryFile, "geo.country", scfg.CountryFile, "MMDB with countries (MaxMind GeoLite2/GeoIP2 Country or City, IPinfo Lite, DB-IP Lite, ip-location-db country)")
	fs.Var(listFlag{&scfg.ASNFiles}, "geo.asn", "AS numbers and names: an MMDB (GeoLite2-ASN, IPinfo Lite) or a first_ip,last_ip,asn,name CSV; repeatable, earlier files win")
	fs.Var(&f.enrich, "enrich", "add the enrichment fields (off: pass every flow through unchanged, still exactly once, with the same dead-lettering)")
	fs.BoolVar(&f.asnOverride, "geo.asn.override", false, "take src_as and dst_as from -geo.asn even when the exporter sent one (default: only replace 0)")
	fs.StringVar(&scfg.NetworksFile, "networks", scfg.NetworksFile, "YAML file of networks by prefix (name, role, site, region, tenant)")
	fs.StringVar(&scfg.ExportersFile, "exporters", scfg.ExportersFile, "YAML file of exporters by sampler address (name, sampling_rate, default_boundary, interfaces)")
	fs.DurationVar(&scfg.PollInterval, "sources.poll", scfg.PollInterval, "reload a data file this soon after it changes (0: only on SIGHUP)")
	fs.StringVar(&f.metricsAddr, "metrics.addr", ":8083", "address serving /metrics, /healthz and /readyz (empty disables)")
	fs.StringVar(&f.probe, "probe", "", cli.ProbeFlagUsage)
	fs.StringVar(&f.logLevel, "loglevel", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log.format", "text", "log format: text or json")
	cli.SetUsage(fs, "enricher: add countries, AS names, networks and interface metadata to flows, Kafka to Kafka, exactly once.")
	return fs, f
}

// run returns the exit code: 0 stopped by a signal, 1 failure, 2 bad flags.
func run(args []string, stderr io.Writer) int {
	cmd := cli.Command{Name: "enricher", Fields: flagOf, Stderr: stderr}
	fail := cmd.Fail
	cfg, scfg := enricher.DefaultConfig(), sources.DefaultConfig()
	fs, f := newFlagSet(stderr, &cfg, &scfg)
	logger, code, done := cmd.Start(fs, args, &f.probe, &f.logLevel, &f.logFormat)
	if done {
		return code
	}
	var err error
	cfg.Brokers = cli.SplitList(f.brokers)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := errors.Join(cfg.Validate(), scfg.Validate()); err != nil {
		return fail(2, err)
	}
	// Off: no data file is loaded (the geodata alone is tens of MB), and
	// the records still go through the same exactly-once pipeline.
	var (
		tr     enricher.Transformer = new(enricher.Passthrough)
		loader *sources.Loader
	)
	if f.enrich {
		if loader, err = sources.NewLoader(scfg, logger, reg); err != nil {
			return fail(1, err)
		}
		tr = enricher.NewTransform(loader, enricher.Options{ASNOverride: f.asnOverride})
	} else {
		logger.Info("enrichment off (-enrich=false): flows pass through unchanged")
	}
	p, err := enricher.NewPipeline(cfg, tr, logger, reg)
	if err != nil {
		return fail(1, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if loader != nil {
		go loader.Run(ctx)
	} else {
		// Nothing to reload; a SIGHUP must not kill the process either.
		signal.Ignore(syscall.SIGHUP)
	}
	if err := cli.ServeMetrics(ctx, f.metricsAddr, reg, p.Ready, logger); err != nil {
		return fail(1, err)
	}
	if err := p.Run(ctx); err != nil {
		return fail(1, err)
	}
	return 0
}
