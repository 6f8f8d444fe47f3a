package edge

// remoteCursor is where a partition's claims from one other region have
// been merged, by origin sequence (the sequence in that region's claim log),
// along the two paths that bring them: the xclaims stream (sourced by
// JetStream, durable, the path of record) and the tail (direct reads of the
// region's claim log while replication recovers from a WAN fault; see
// tail.go). Each path delivers records in origin order; the cursor merges
// each record once. It is pure: the partition's goroutine owns it.
type remoteCursor struct {
	x    uint64 // the last origin sequence the xclaims stream delivered
	tail uint64 // the last the tail merged beyond x (0: none)
}

// fromXClaims reports whether a record the xclaims stream delivers, at
// origin sequence seq, is to be merged: not when the tail merged it already.
// A sequence at or below the last one xclaims delivered means the region's
// log is sourced again from its start (after a failback, which remakes it)
// or was made anew: merged as it comes, and the tail's range forgotten.
func (c *remoteCursor) fromXClaims(seq uint64) bool {
	if seq <= c.x {
		c.x, c.tail = seq, 0
		return true
	}
	c.x = seq
	return seq > c.tail
}

// fromTail reports whether a record the tail read, at origin sequence seq,
// is to be merged: only beyond everything either path brought.
func (c *remoteCursor) fromTail(seq uint64) bool {
	if seq <= max(c.x, c.tail) {
		return false
	}
	c.tail = seq
	return true
}

// next is the origin sequence the tail reads from.
func (c *remoteCursor) next() uint64 { return max(c.x, c.tail) + 1 }
