package detector

import "time"

// Events of an alert.
const (
	EventStart  = "start"
	EventUpdate = "update"
	EventEnd    = "end"
)

// Alert is one record of the alerts topic (and of a webhook POST), JSON.
// Rates are per second and scaled by the sampling rate (0 counts as 1):
// bits, packets, flows (flow records, not scaled).
type Alert struct {
	Event     string    `json:"event"`      // start, update or end
	ID        string    `json:"id"`         // the same for every event of one attack
	Target    string    `json:"target"`     // destination address, or network name for a network's aggregate
	TargetNet string    `json:"target_net"` // the enricher's dst_net_name ("" when unknown)
	Vector    string    `json:"vector"`
	At        time.Time `json:"at"` // event time (time_received based), UTC: the end of the step the event was decided at
	// Figures: for start, the mean over the steps that started the
	// attack; for update, the mean over the last Config.Window; for end,
	// the mean over the whole attack.
	Bps   uint64 `json:"bps"`
	Pps   uint64 `json:"pps"`
	Flows uint64 `json:"flows"`
	// The heaviest sources (by packets) since the attack began, at most 5 each.
	TopSrcAddr    []string `json:"top_src_addr"`
	TopSrcAS      []uint32 `json:"top_src_as"`
	TopSrcCountry []string `json:"top_src_country"`
	Exporters     []string `json:"exporters"` // exporter_name, else the sampler address
	Started       string   `json:"started"`   // RFC3339, UTC: the start of the first step above the threshold
	// Update and end only.
	PeakBps   uint64  `json:"peak_bps,omitempty"`
	PeakPps   uint64  `json:"peak_pps,omitempty"`
	PeakFlows uint64  `json:"peak_flows,omitempty"`
	DurationS float64 `json:"duration_s,omitempty"` // end only: from started to the start of the first step below

	first time.Time // the start of the attack's first step, for the detection delay
}
