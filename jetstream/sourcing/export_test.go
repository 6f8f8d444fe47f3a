package sourcing

// RemoveForTest is a restart's first half, for tests of a restart cut short.
var RemoveForTest = remove
