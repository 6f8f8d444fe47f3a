package topology

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValidAndRoundTrips(t *testing.T) {
	d := Default().Defaults()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	back, err := Parse(d.JSON())
	if err != nil {
		t.Fatal(err)
	}
	if got := back.RTT("ap-south", "us-east"); got != 190*time.Millisecond {
		t.Fatalf("RTT ap-south/us-east = %v", got)
	}
	if back.RTT("eu-west", "us-east") != 80*time.Millisecond || back.RTT("eu-west", "ap-south") != 120*time.Millisecond {
		t.Fatal("default RTTs changed")
	}
	homes := map[string]int{}
	for p := range back.Partitions {
		homes[back.Home(p)]++
	}
	if len(homes) != 3 {
		t.Fatalf("homes not spread: %v", homes)
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	cases := map[string]string{
		`{"regions":[]}`: "regions: at least one region",
		`{"regions":[{"name":"A","cores":[{"name":"c"}],"edges":[{"name":"e"}]}]}`:                                                                                                               `regions[0].name: "A" must be`,
		`{"regions":[{"name":"a","cores":[{"name":"c"},{"name":"d"}],"edges":[{"name":"e"}]}]}`:                                                                                                  "2 cannot keep a quorum",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[]}]}`:                                                                                                                           "has no edge",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"c"}]}]}`:                                                                                                               `"c" already names regions[0].cores[0]`,
		`{"regions":[{"name":"a","cores":[{"name":"c","port":4222,"cluster_port":4222}],"edges":[{"name":"e"}]}]}`:                                                                               "already used",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]},{"name":"b","cores":[{"name":"d"}],"edges":[{"name":"f"}]}]}`:                                                    `no link between "a" and "b"`,
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"links":[{"a":"a","b":"z","rtt":"1ms"}]}`:                                                                       `links[0].b: unknown region "z"`,
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"mode":"eventual"}`:                                                                                             `mode: "eventual"`,
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"window":"10ms"}`:                                                                                               "window: 10ms is shorter",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"window":"soon"}`:                                                                                               "invalid duration",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"homes":{"99":"a"}}`:                                                                                            `homes: "99" is not a partition`,
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"replicas":3}`:                                                                                                  "replicas 3 needs 3 core nodes",
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}],"colour":"red"}`:                                                                                                `unknown field "colour"`,
		`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]},{"name":"b","cores":[{"name":"d"}],"edges":[{"name":"f"}]}],"links":[{"a":"a","b":"b","rtt":"1ms","loss":1.5}]}`: "loss: 1.5",
	}
	for in, want := range cases {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s)\n  = %v\n  want an error containing %q", in, err, want)
		}
	}
}

func TestHomesOverride(t *testing.T) {
	d := Default()
	d.Homes = map[string]string{"0": "ap-south"}
	d = d.Defaults()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.Home(0) != "ap-south" || d.Home(1) != "eu-west" {
		t.Fatalf("homes: %s %s", d.Home(0), d.Home(1))
	}
	total := 0
	for _, r := range d.RegionNames() {
		total += len(d.HomePartitions(r))
	}
	if total != d.Partitions {
		t.Fatalf("home partitions cover %d of %d", total, d.Partitions)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Default().JSON())
	f.Add([]byte(`{"regions":[{"name":"a","cores":[{"name":"c"}],"edges":[{"name":"e"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		top, err := Parse(b)
		if err != nil {
			return
		}
		// A topology that parses is valid, and its homes are real regions.
		if err := top.Validate(); err != nil {
			t.Fatal(err)
		}
		for p := range top.Partitions {
			if _, ok := top.Region(top.Home(p)); !ok {
				t.Fatalf("home of p%d is %q", p, top.Home(p))
			}
		}
	})
}
