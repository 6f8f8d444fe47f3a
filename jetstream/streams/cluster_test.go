package streams_test

import (
	"context"
	"testing"
	"time"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestProvisionR3 provisions R3 streams on a 3-node region from every node at once.
func TestProvisionR3(t *testing.T) {
	nodes := coretest.Cluster(t, "r3", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make(chan error, len(nodes))
	for _, n := range nodes {
		_, js := coretest.Connect(t, n.ClientURL())
		go func() {
			errs <- streams.Provision(ctx, js, streams.Config{Names: streams.Names{Region: "r3"}, Replicas: 3, Partitions: 4})
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
