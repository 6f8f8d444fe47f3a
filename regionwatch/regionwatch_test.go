package regionwatch

import (
	"testing"
	"time"
)

func TestLost(t *testing.T) {
	const after = 10 * time.Second
	silent := func(o string, d time.Duration) View { return View{Observer: o, Answered: true, Silent: d} }
	for _, c := range []struct {
		name      string
		views     []View
		observers int
		want      bool
	}{
		{"standby and the third region agree", []View{silent("s", 11*time.Second), silent("t", 10*time.Second)}, 2, true},
		{"cut from its standby only: the third region hears it", []View{silent("s", time.Minute), silent("t", time.Second)}, 2, false},
		{"the third region does not answer", []View{silent("s", time.Minute), {Observer: "t"}}, 2, false},
		{"the standby hears it", []View{silent("s", time.Second), silent("t", time.Minute)}, 2, false},
		{"the standby cannot read its mirror", []View{{Observer: "s"}, silent("t", time.Minute)}, 2, false},
		{"not long enough", []View{silent("s", 9*time.Second), silent("t", time.Minute)}, 2, false},
		{"two regions: the standby alone is all", []View{silent("s", after)}, 1, true},
		{"four observers: three agree", []View{silent("s", after), silent("t", after), silent("u", after), silent("v", 0)}, 4, true},
		{"four observers: two agree is no majority", []View{silent("s", after), silent("t", after), silent("u", 0), silent("v", 0)}, 4, false},
	} {
		if got := Lost(c.views, "s", c.observers, after); got != c.want {
			t.Errorf("%s: Lost = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestShardOf(t *testing.T) {
	base := "onceplane-us-east-claims"
	for name, want := range map[string]bool{base: true, base + "-2": true, base + "-12": true, base + "-": false, base + "-claims": false, "onceplane-us-east-claims-x": false, "onceplane-us": false} {
		if got := shardOf(name, base); got != want {
			t.Errorf("shardOf(%q) = %v, want %v", name, got, want)
		}
	}
}
