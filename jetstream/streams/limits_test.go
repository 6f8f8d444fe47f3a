package streams

import "testing"

// TestConsumerLimitFollowsPartitions: at 1,024 partitions every stream
// allows 4,096 consumers (the server's default of 1,000 per stream stopped
// a 1,024-partition region's takeovers: `drill controlplane -partitions
// 1024` found "maximum consumers limit reached"), and never fewer than
// the default.
func TestConsumerLimitFollowsPartitions(t *testing.T) {
	for _, c := range []struct{ p, want int }{{8, 1000}, {250, 1000}, {1024, 4096}} {
		for _, sc := range (Config{Partitions: c.p, Peers: []string{"other"}}).StreamConfigs() {
			if sc.MaxConsumers != c.want {
				t.Errorf("%d partitions: %s allows %d consumers, want %d", c.p, sc.Name, sc.MaxConsumers, c.want)
			}
		}
	}
}
