package streams

import "fmt"

// ValidateRegion checks a region name: 1-63 lower-case letters, digits or
// '-', starting with a letter or digit. It is one token of every subject
// and part of every stream name, and a JetStream cluster's name.
func ValidateRegion(name string) error {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' {
		return fmt.Errorf("%q must be 1-63 lower-case letters, digits or '-', starting with a letter or digit", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q must be 1-63 lower-case letters, digits or '-', starting with a letter or digit", name)
		}
	}
	return nil
}
