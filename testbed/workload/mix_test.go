package workload_test

import (
	"testing"

	"github.com/onceplane/onceplane/testbed/workload"
)

func TestMixSchedule(t *testing.T) {
	m := workload.Mix{Regions: []string{"a", "b", "c"}, Events: 3000, Rate: 1000, DupRate: 0.2, RetryRate: 0.05, CrossRate: 0.1, RaceRate: 0.05, Prefix: "run1-", Seed: 7}
	sends, kinds := m.Schedule()
	if kinds["first"] != 3000 {
		t.Fatalf("first sends %d, want 3000", kinds["first"])
	}
	total := 0
	for k, n := range kinds {
		total += n
		if n == 0 {
			t.Errorf("no %s sends", k)
		}
	}
	if total != len(sends) {
		t.Fatalf("kinds sum %d, sends %d", total, len(sends))
	}
	first := map[string]string{}
	for i, s := range sends {
		if i > 0 && s.At < sends[i-1].At {
			t.Fatalf("send %d out of time order", i)
		}
		if s.Kind == "first" {
			first[s.ID] = s.Region
		}
	}
	for i := range m.Events {
		if _, ok := first[m.ID(i)]; !ok {
			t.Fatalf("%s never sent first", m.ID(i))
		}
	}
	for _, s := range sends {
		switch s.Kind {
		case "cross", "race":
			if s.Region == first[s.ID] {
				t.Fatalf("%s %s sent to its own region", s.Kind, s.ID)
			}
		case "dup", "retry":
			if s.Region != first[s.ID] {
				t.Fatalf("%s %s sent to another region", s.Kind, s.ID)
			}
		}
	}
	again, _ := m.Schedule()
	for i := range sends {
		if sends[i] != again[i] {
			t.Fatal("the same seed gave another schedule")
		}
	}
}
