package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
)

// app is what every role gets: the loaded configuration and a logger.
type app struct {
	cfg        config.Config
	log        *slog.Logger
	configPath string
	flagHolder config.Config // only registers the flags; values are read back by name
}

func newRoot() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:   "shukei",
		Short: "Shukei: privacy-preserving usage analytics that follows a published data policy",
		Long: `Shukei turns a SaaS vendor's data policy into running code. Collectors send usage events
(never customer content) to Kafka; the processor checks each event against the policy, rejects
anything that looks like customer content, pseudonymises users and tags the purposes the event
may serve; the aggregator bounds each tenant's contribution and releases differentially private
aggregates; ClickHouse answers purpose-scoped queries.

Configuration comes from built-in defaults, then the YAML file (--config, SHUKEI_CONFIG, or
./shukei.yaml when present), then SHUKEI_* environment variables, then flags. Every setting has
all three forms, e.g. kafka.brokers, SHUKEI_KAFKA_BROKERS, --kafka.brokers; a command's --help
lists the flags of the settings it reads, and 'shukei config --help' all of them.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.load(cmd)
		},
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "", "YAML configuration file (default $SHUKEI_CONFIG, else ./shukei.yaml if it exists)")
	a.flagHolder.AddFlags(root.PersistentFlags(), "log")

	root.AddCommand(
		newMigrateCmd(a),
		newTopicsCmd(a),
		newConfigCmd(a),
		newCollectorCmd(a),
		newProcessorCmd(a),
		newDLQCmd(a),
		newAggregatorCmd(a),
		newAtomsCmd(a),
		newQueryCmd(a),
		newBenchCmd(a),
		newRetentionCmd(a),
		newBreakGlassCmd(a),
		newLoadgenCmd(a),
		newPrincipalsCmd(a),
		newAuditCmd(a),
		newLedgerCmd(a),
		newTenantsCmd(a),
		newKeysCmd(a),
		newUsersCmd(a),
		newPolicyCmd(a),
		newDemoCmd(a),
	)
	for _, c := range root.Commands() {
		sections, ok := commandSections[c.Name()]
		if !ok {
			panic("cmd/shukei: command " + c.Name() + " has no entry in commandSections")
		}
		// A command group's subcommands inherit its flags.
		a.flagHolder.AddFlags(c.PersistentFlags(), sections...)
	}
	refuseUnknownSubcommands(root)
	return root
}

// commandSections are the configuration sections each command reads, beyond log (every
// command logs): its --help lists their flags and no others. Every setting also has its YAML
// key and SHUKEI_* variable whatever the command; 'shukei config' lists them all.
var commandSections = map[string][]string{
	"migrate":    {"clickhouse", "anonymizer"},
	"topics":     {"kafka", "audit"},
	"config":     config.Sections(),
	"collector":  {"collector", "events", "registry", "kafka", "clickhouse", "anonymizer"},
	"processor":  {"processor", "events", "registry", "kafka", "clickhouse", "anonymizer"},
	"dlq":        {"kafka", "clickhouse", "anonymizer", "audit"},
	"aggregator": {"aggregator", "events", "registry", "query", "kafka", "clickhouse", "anonymizer", "ledger"},
	"atoms":      {"aggregator", "query", "kafka", "clickhouse", "anonymizer"},
	"query":      {"query", "aggregator", "audit", "ledger", "kafka", "clickhouse", "anonymizer"},
	"bench":      config.Sections(),
	"retention":  {"aggregator", "audit", "ledger", "kafka", "clickhouse", "anonymizer"},
	"breakglass": {"query", "audit", "kafka", "clickhouse", "anonymizer"},
	"loadgen":    {"collector", "events", "registry", "kafka", "clickhouse", "anonymizer"},
	"principals": {"query", "audit", "kafka", "clickhouse", "anonymizer"},
	"audit":      {"audit", "kafka", "clickhouse", "anonymizer"},
	"ledger":     {"ledger", "aggregator", "kafka", "clickhouse", "anonymizer"},
	"tenants":    {"audit", "kafka", "clickhouse", "anonymizer"},
	"keys":       {"anonymizer", "clickhouse", "audit", "ledger"},
	"users":      {"clickhouse", "anonymizer"},
	"policy":     {"events", "clickhouse", "anonymizer"},
	"demo":       config.Sections(),
}

// refuseUnknownSubcommands makes every command group (a command with subcommands and nothing
// to run itself) fail on an unknown subcommand instead of printing its help and exiting 0: a
// script calling 'shukei tenants delet X' must not believe it succeeded.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil && c.Parent() != nil {
		c.Args = cobra.NoArgs
		c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
	}
}

func (a *app) load(cmd *cobra.Command) error {
	path := config.FilePath(a.configPath)
	cfg, err := config.Load(path, os.Environ(), cmd.Flags())
	if err != nil {
		return err
	}
	a.cfg = cfg
	a.configPath = path
	a.log = ops.NewLogger(cmd.ErrOrStderr(), cfg.Log)
	for _, old := range cfg.Renamed {
		a.log.Warn("a setting was given by its old name; it still works, but use the new one", "old", old, "new", config.Renamed[old])
	}
	return nil
}

func newConfigCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration, or check it",
		Long: `config prints the configuration Shukei would run with after the file, the environment
and the flags are applied, one setting a line with its environment variable. It exits non-zero
and lists every problem if the configuration is invalid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.cfg.Print(cmd.OutOrStdout(), a.configPath)
			return nil
		},
	}
}
