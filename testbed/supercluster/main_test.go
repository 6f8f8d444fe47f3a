package supercluster

import (
	"testing"

	"github.com/onceplane/onceplane/testbed/coretest"
)

func TestMain(m *testing.M) {
	coretest.LongMain(m, "three regions of core nodes over WAN links")
}
