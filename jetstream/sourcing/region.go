package sourcing

import "github.com/onceplane/onceplane/jetstream/streams"

// ForRegion is the watchdog of a region's sourcing streams (streams.Config's
// xclaims or home shards), labelled by region; set Server, Metrics and
// Logger on it.
func ForRegion(cfg streams.Config) WatchOptions {
	return WatchOptions{Streams: cfg.SourcingStreams(), Region: cfg.Defaults().Region, Origins: cfg.Origins()}
}
