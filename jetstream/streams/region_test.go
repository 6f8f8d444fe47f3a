package streams

import "testing"

func TestValidateRegion(t *testing.T) {
	for _, ok := range []string{"local", "us-east", "a", "0-r", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijk"} {
		if err := ValidateRegion(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-east", "US", "us.east", "us*", ">", "us east", "é", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijkl"} {
		if ValidateRegion(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
