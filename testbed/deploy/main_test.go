package deploy

import (
	"testing"

	"github.com/onceplane/onceplane/testbed/coretest"
)

func TestMain(m *testing.M) {
	coretest.LongMain(m, "whole topologies in one process (G2, G3, link cuts, region core restarts)")
}
