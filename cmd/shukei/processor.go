package main

import (
	"github.com/spf13/cobra"

	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/pipeline/processor"
)

func newProcessorCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "processor",
		Short: "Load usage events from Kafka into ClickHouse, exactly once, tagged with their purposes",
		Long: `processor joins the processor consumer group on the raw topic. For every message it runs the
event decision (decode, validate, input-data guard, pseudonymise, tag purposes under the policy
version in force and the tenant's status and consents), then writes batches to the event store
(which fills the purpose marts) and rejections, with their reasons, to the rejections table and
the DLQ topic. Offsets are committed only after ClickHouse holds the batch; on start and after a
rebalance it resumes from the store's high-water marks, so nothing is stored twice.

While ClickHouse or Kafka is down it stops reading, retries with backoff and resumes by itself
(shukei_processor_backpressure shows it). SIGTERM abandons the current batch without
committing it. Needs the master key (anonymizer.master_key_file or
SHUKEI_ANONYMIZER_MASTER_KEY). Serves /metrics, /healthz and /readyz on processor.listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ops.OpenAndRun(cmd.Context(), a.cfg, a.log, processor.Open)
		},
	}
}
